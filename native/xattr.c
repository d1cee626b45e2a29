// File-system calls Node does not have, for src/sandbox/native-fs.ts: extended
// attributes (llistxattr, lgetxattr, lsetxattr, lremovexattr — the l* forms, which
// never follow a symlink) and mknod (device nodes and FIFOs for layer extraction).
//
// All calls are synchronous: each is one metadata syscall, cheaper than a trip through
// the libuv pool. Paths are UTF-8 strings. A failing call throws an Error carrying
// `errno` (positive), `syscall` and `path`; the JS side turns errno into Node's `code`
// (ENOENT, ENOTSUP, ...) so the errors read like node:fs's.
#define NAPI_VERSION 6
#define _GNU_SOURCE
#include <node_api.h>
#include "napi-util.h"
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>

// Throws `syscall: strerror (path)` with errno, syscall and path as properties.
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  char msg[4352];
  snprintf(msg, sizeof msg, "%s: %s (%s)", syscall, strerror(err), path);
  napi_value text, error, value;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text) != napi_ok) return NULL;
  if (napi_create_error(env, NULL, text, &error) != napi_ok) return NULL;
  if (napi_create_int32(env, err, &value) == napi_ok) napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok) napi_set_named_property(env, error, "syscall", value);
  if (napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &value) == napi_ok) napi_set_named_property(env, error, "path", value);
  napi_throw(env, error);
  return NULL;
}

// A JS string argument as a malloc'ed, NUL-terminated UTF-8 string (NULL + exception
// on failure). Strings with a NUL byte are refused: the kernel would see a shorter name.
static char *string_arg(napi_env env, napi_value value, const char *what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a string", what);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  size_t got = 0;
  if (napi_get_value_string_utf8(env, value, s, len + 1, &got) != napi_ok) {
    free(s);
    throw_last(env, "napi_get_value_string_utf8");
    return NULL;
  }
  if (strlen(s) != got) {
    free(s);
    char msg[128];
    snprintf(msg, sizeof msg, "%s must not contain a NUL byte", what);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  return s;
}

// argv[0] and argv[1] as the path and attribute name; false (exception thrown,
// nothing left allocated) when either is not a string.
static bool path_and_name(napi_env env, napi_value *argv, char **path, char **name) {
  *path = string_arg(env, argv[0], "path");
  if (!*path) return false;
  *name = string_arg(env, argv[1], "name");
  if (!*name) {
    free(*path);
    return false;
  }
  return true;
}

static bool args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_last(env, "napi_get_cb_info");
    return false;
  }
  if (argc < want) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return false;
  }
  return true;
}

// llistxattr(path): string[] — the names of path's attributes, in the kernel's order.
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return NULL;
  char *path = string_arg(env, argv[0], "path");
  if (!path) return NULL;
  char *buf = NULL;
  ssize_t n;
  // The list may grow between the size query and the read: retry on ERANGE.
  for (;;) {
    n = llistxattr(path, NULL, 0);
    if (n < 0) break;
    free(buf);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf) {
      free(path);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    if (n == 0) break;
    n = llistxattr(path, buf, (size_t)n);
    if (n >= 0 || errno != ERANGE) break;
  }
  if (n < 0) {
    int err = errno;
    free(buf);
    napi_value r = throw_errno(env, err, "llistxattr", path);
    free(path);
    return r;
  }
  free(path);
  napi_value result;
  if (napi_create_array(env, &result) != napi_ok) {
    free(buf);
    throw_last(env, "napi_create_array");
    return NULL;
  }
  uint32_t index = 0;
  for (ssize_t at = 0; at < n;) {
    size_t len = strnlen(buf + at, (size_t)(n - at));
    napi_value name;
    if (napi_create_string_utf8(env, buf + at, len, &name) != napi_ok || napi_set_element(env, result, index++, name) != napi_ok) {
      free(buf);
      throw_last(env, "napi_set_element");
      return NULL;
    }
    at += (ssize_t)len + 1;
  }
  free(buf);
  return result;
}

// lgetxattr(path, name): Buffer | undefined — undefined when path has no such
// attribute (ENODATA); other failures throw.
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args(env, info, 2, argv)) return NULL;
  char *path, *name;
  if (!path_and_name(env, argv, &path, &name)) return NULL;
  char *buf = NULL;
  ssize_t n;
  for (;;) {
    n = lgetxattr(path, name, NULL, 0);
    if (n < 0) break;
    free(buf);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf) {
      free(path);
      free(name);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    if (n == 0) break;
    n = lgetxattr(path, name, buf, (size_t)n);
    if (n >= 0 || errno != ERANGE) break;
  }
  int err = errno;
  free(name);
  napi_value result;
  if (n < 0) {
    free(buf);
    if (err == ENODATA) {
      free(path);
      CHECK(env, napi_get_undefined(env, &result));
      return result;
    }
    napi_value r = throw_errno(env, err, "lgetxattr", path);
    free(path);
    return r;
  }
  free(path);
  void *data = NULL;
  if (napi_create_buffer_copy(env, (size_t)n, buf, &data, &result) != napi_ok) {
    free(buf);
    throw_last(env, "napi_create_buffer_copy");
    return NULL;
  }
  free(buf);
  return result;
}

// lsetxattr(path, name, value: Uint8Array, flags = 0): undefined. flags: 1 = XATTR_CREATE,
// 2 = XATTR_REPLACE, as in <sys/xattr.h>.
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "lsetxattr(path, name, value[, flags])");
    return NULL;
  }
  bool typed = false;
  CHECK(env, napi_is_typedarray(env, argv[2], &typed));
  if (!typed) {
    napi_throw_type_error(env, NULL, "value must be a Buffer or Uint8Array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void *data = NULL;
  napi_value arraybuffer;
  CHECK(env, napi_get_typedarray_info(env, argv[2], &type, &length, &data, &arraybuffer, &offset));
  if (type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "value must be a Buffer or Uint8Array");
    return NULL;
  }
  int32_t flags = 0;
  if (argc >= 4) {
    napi_valuetype vt;
    CHECK(env, napi_typeof(env, argv[3], &vt));
    if (vt != napi_undefined) CHECK(env, napi_get_value_int32(env, argv[3], &flags));
  }
  char *path, *name;
  if (!path_and_name(env, argv, &path, &name)) return NULL;
  int rc = lsetxattr(path, name, length > 0 ? data : "", length, flags);
  int err = errno;
  free(name);
  if (rc != 0) {
    napi_value r = throw_errno(env, err, "lsetxattr", path);
    free(path);
    return r;
  }
  free(path);
  return NULL;
}

// lremovexattr(path, name): undefined; throws (ENODATA too) when it fails.
static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args(env, info, 2, argv)) return NULL;
  char *path, *name;
  if (!path_and_name(env, argv, &path, &name)) return NULL;
  int rc = lremovexattr(path, name);
  int err = errno;
  free(name);
  if (rc != 0) {
    napi_value r = throw_errno(env, err, "lremovexattr", path);
    free(path);
    return r;
  }
  free(path);
  return NULL;
}

// mknod(path, mode, major, minor): undefined. `mode` holds the file type (S_IFCHR,
// S_IFBLK, S_IFIFO) and permission bits; the process umask applies, as in mknod(2).
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args(env, info, 4, argv)) return NULL;
  uint32_t mode = 0, major_ = 0, minor_ = 0;
  CHECK(env, napi_get_value_uint32(env, argv[1], &mode));
  CHECK(env, napi_get_value_uint32(env, argv[2], &major_));
  CHECK(env, napi_get_value_uint32(env, argv[3], &minor_));
  char *path = string_arg(env, argv[0], "path");
  if (!path) return NULL;
  int rc = mknod(path, (mode_t)mode, makedev(major_, minor_));
  if (rc != 0) {
    napi_value r = throw_errno(env, errno, "mknod", path);
    free(path);
    return r;
  }
  free(path);
  return NULL;
}

NAPI_MODULE_INIT() {
  struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"llistxattr", js_llistxattr},
      {"lgetxattr", js_lgetxattr},
      {"lsetxattr", js_lsetxattr},
      {"lremovexattr", js_lremovexattr},
      {"mknod", js_mknod},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    CHECK(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
    CHECK(env, napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}
