// Shared by the addons: turning a failed N-API call into a JS exception.
#ifndef OCIBUILD_NAPI_UTIL_H
#define OCIBUILD_NAPI_UTIL_H

#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>

// Throws "<what> failed: <N-API's message>" unless an exception is already pending.
static inline void throw_last(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "%s failed: %s", what, info && info->error_message ? info->error_message : "unknown N-API error");
  napi_throw_error(env, NULL, msg);
}

// In a napi_value-returning function: on failure, throw and return NULL.
#define CHECK(env, call)                                                   \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      throw_last(env, #call);                                              \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

#endif
