// Streaming xz/lzma decoding on the system liblzma, for src/deb/xz.ts.
//
// One XzDecoder wraps one lzma_stream. `code(input, output, finish, callback)` runs
// lzma_code() on the libuv thread pool (napi_async_work) until the input is used up
// or the output is full, then calls back on the JS thread with
// (error, inputUsed, outputUsed, streamEnd). At most one job runs per decoder; the
// JS side (src/deb/xz.ts) owns buffering and back-pressure. Several decoders run in
// parallel on the pool, which is how several .debs decode at once.
//
// Errors carry the liblzma return code's name in `code` (LZMA_DATA_ERROR, ...).
#define _DEFAULT_SOURCE // MAP_ANONYMOUS, MADV_HUGEPAGE under -std=c11
#define NAPI_VERSION 6
#include <node_api.h>
#include "napi-util.h"
#include <lzma.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct {
  lzma_stream strm;
  bool initialized; // lzma_end() not called yet
  bool busy;        // a job is queued or running
  bool end_pending; // end() was called while busy: end when the job completes
  // The job in flight. The references keep the buffers and the callback alive.
  napi_async_work work;
  napi_ref self_ref, in_ref, out_ref, cb_ref;
  const uint8_t *in;
  size_t in_len;
  uint8_t *out;
  size_t out_len;
  lzma_action action;
  lzma_ret ret;
} Decoder;

static const char *ret_name(lzma_ret ret) {
  switch (ret) {
    case LZMA_OK: return "LZMA_OK";
    case LZMA_STREAM_END: return "LZMA_STREAM_END";
    case LZMA_NO_CHECK: return "LZMA_NO_CHECK";
    case LZMA_UNSUPPORTED_CHECK: return "LZMA_UNSUPPORTED_CHECK";
    case LZMA_GET_CHECK: return "LZMA_GET_CHECK";
    case LZMA_MEM_ERROR: return "LZMA_MEM_ERROR";
    case LZMA_MEMLIMIT_ERROR: return "LZMA_MEMLIMIT_ERROR";
    case LZMA_FORMAT_ERROR: return "LZMA_FORMAT_ERROR";
    case LZMA_OPTIONS_ERROR: return "LZMA_OPTIONS_ERROR";
    case LZMA_DATA_ERROR: return "LZMA_DATA_ERROR";
    case LZMA_BUF_ERROR: return "LZMA_BUF_ERROR";
    case LZMA_PROG_ERROR: return "LZMA_PROG_ERROR";
    default: return "LZMA_UNKNOWN_ERROR";
  }
}

// In the words of xz(1)'s own messages, so that users recognize them.
static void ret_message(const Decoder *d, lzma_ret ret, char *buf, size_t size) {
  switch (ret) {
    case LZMA_MEM_ERROR:
      snprintf(buf, size, "xz: cannot allocate memory");
      break;
    case LZMA_MEMLIMIT_ERROR:
      snprintf(buf, size, "xz: decoding needs %llu MiB of memory, more than the limit of %llu MiB",
               (unsigned long long)((lzma_memusage(&d->strm) + (1 << 20) - 1) >> 20),
               (unsigned long long)(lzma_memlimit_get(&d->strm) >> 20));
      break;
    case LZMA_FORMAT_ERROR:
      snprintf(buf, size, "xz: file format not recognized");
      break;
    case LZMA_OPTIONS_ERROR:
      snprintf(buf, size, "xz: unsupported options in the compressed data");
      break;
    case LZMA_DATA_ERROR:
      snprintf(buf, size, "xz: compressed data is corrupt");
      break;
    case LZMA_BUF_ERROR:
      snprintf(buf, size, "xz: unexpected end of input (the compressed data is truncated)");
      break;
    case LZMA_PROG_ERROR:
      snprintf(buf, size, "xz: internal error in liblzma or its caller");
      break;
    default:
      snprintf(buf, size, "xz: unexpected liblzma return code %d", (int)ret);
  }
}

static napi_value lzma_error(napi_env env, const Decoder *d, lzma_ret ret) {
  char msg[200], full[240];
  ret_message(d, ret, msg, sizeof msg);
  snprintf(full, sizeof full, "%s (%s)", msg, ret_name(ret));
  napi_value code = NULL, message = NULL, err = NULL;
  if (napi_create_string_utf8(env, ret_name(ret), NAPI_AUTO_LENGTH, &code) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, full, NAPI_AUTO_LENGTH, &message) != napi_ok) return NULL;
  if (napi_create_error(env, code, message, &err) != napi_ok) return NULL;
  return err;
}

// Memory. A fresh 4 KiB page costs a page fault on first write; on the VMs this was
// measured on (bench/RESULTS.md) that is ~14 us, 3.5 ms per MiB: more than a quarter
// of the decoding time when every output byte lands in fresh memory, which it does
// until V8 collects the previous buffers. So the big pieces, the output blocks and
// liblzma's dictionary (8 MiB for xz -6), are mapped 2 MiB-aligned and marked
// MADV_HUGEPAGE: one fault per 2 MiB where transparent huge pages are enabled
// ("always" or "madvise"), the usual 4 KiB pages elsewhere.
#define HUGE_PAGE ((size_t)2 << 20)

// A 2 MiB-aligned mapping of `size` bytes (a multiple of HUGE_PAGE), or NULL.
static void *map_huge(size_t size) {
  size_t len = size + HUGE_PAGE;
  uint8_t *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return NULL;
  uint8_t *start = (uint8_t *)(((uintptr_t)base + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (start > base) munmap(base, (size_t)(start - base));
  uint8_t *end = start + size;
  if (base + len > end) munmap(end, (size_t)(base + len - end));
#ifdef MADV_HUGEPAGE
  madvise(start, size, MADV_HUGEPAGE);
#endif
  return start;
}

static size_t huge_round(size_t size) {
  return (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

// liblzma's allocator: allocations of 1 MiB and more (the dictionary) are huge-page
// mappings; a header before each block says how to free it.
#define HEADER 64 // keeps the 16-byte alignment malloc gives
#define LARGE ((size_t)1 << 20)
typedef struct {
  void *base;
  size_t len; // 0: malloc'd
} Header;

static void *lz_alloc(void *opaque, size_t nmemb, size_t size) {
  (void)opaque;
  if (size != 0 && nmemb > (SIZE_MAX - HUGE_PAGE) / size) return NULL;
  size_t want = nmemb * size;
  if (want >= LARGE) {
    // The header sits in the last small page before the aligned block; what is mapped
    // beyond the block is given back at once.
    size_t size_up = huge_round(want), len = size_up + HUGE_PAGE;
    uint8_t *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL;
    uint8_t *block = (uint8_t *)(((uintptr_t)base + HEADER + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    uint8_t *end = block + size_up;
    if (base + len > end) munmap(end, (size_t)(base + len - end));
#ifdef MADV_HUGEPAGE
    madvise(block, size_up, MADV_HUGEPAGE);
#endif
    Header *h = (Header *)(block - HEADER);
    h->base = base;
    h->len = (size_t)(end - base);
    return block;
  }
  uint8_t *p = malloc(want + HEADER);
  if (p == NULL) return NULL;
  Header *h = (Header *)p;
  h->base = p;
  h->len = 0;
  return p + HEADER;
}

static void lz_free(void *opaque, void *ptr) {
  (void)opaque;
  if (ptr == NULL) return;
  Header *h = (Header *)((uint8_t *)ptr - HEADER);
  if (h->len == 0) free(h->base);
  else munmap(h->base, h->len);
}

static const lzma_allocator allocator = {lz_alloc, lz_free, NULL};

// outputBlock(): a Buffer of HUGE_PAGE bytes (uninitialized) for decoded output; its
// memory is unmapped when V8 frees the last view of it.
static void block_release(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  munmap(data, HUGE_PAGE);
}

static napi_value output_block(napi_env env, napi_callback_info info) {
  (void)info;
  void *data = map_huge(HUGE_PAGE);
  if (data == NULL) {
    napi_throw_error(env, "ERR_MEMORY_ALLOCATION_FAILED", "cannot map an output block");
    return NULL;
  }
  napi_value buf;
  if (napi_create_external_buffer(env, HUGE_PAGE, data, block_release, NULL, &buf) != napi_ok) {
    // Runtimes that refuse external buffers: the caller allocates its own.
    munmap(data, HUGE_PAGE);
    throw_last(env, "napi_create_external_buffer");
    return NULL;
  }
  return buf;
}

// liblzma streams initialized and not yet ended, in this process: lets tests check
// that destroyed decoders free their memory. Decoders live on several JS threads
// when worker_threads load the addon.
static int live_streams = 0;

static void release(Decoder *d) {
  if (d->initialized) {
    lzma_end(&d->strm);
    d->initialized = false;
    __atomic_fetch_sub(&live_streams, 1, __ATOMIC_RELAXED);
  }
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Decoder *d = data;
  // A running job holds a reference to the wrapper, so `busy` is false here.
  release(d);
  free(d);
}

// new XzDecoder(memlimit?: number): .xz (concatenated streams, as `xz -dc`) or .lzma.
static napi_value decoder_new(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  uint64_t memlimit = UINT64_MAX;
  if (argc >= 1) {
    napi_valuetype t;
    CHECK(env, napi_typeof(env, argv[0], &t));
    if (t == napi_number) {
      double v;
      CHECK(env, napi_get_value_double(env, argv[0], &v));
      if (!(v >= 1)) {
        napi_throw_range_error(env, NULL, "memlimit must be a positive number of bytes");
        return NULL;
      }
      if (v < 18446744073709551615.0) memlimit = (uint64_t)v;
    } else if (t != napi_undefined && t != napi_null) {
      napi_throw_type_error(env, NULL, "memlimit must be a number");
      return NULL;
    }
  }

  Decoder *d = calloc(1, sizeof *d);
  if (d == NULL) {
    napi_throw_error(env, "LZMA_MEM_ERROR", "xz: cannot allocate memory (LZMA_MEM_ERROR)");
    return NULL;
  }
  lzma_stream init = LZMA_STREAM_INIT;
  d->strm = init;
  d->strm.allocator = &allocator;
  lzma_ret ret = lzma_auto_decoder(&d->strm, memlimit, LZMA_CONCATENATED);
  if (ret != LZMA_OK) {
    napi_value err = lzma_error(env, d, ret);
    lzma_end(&d->strm);
    free(d);
    if (err != NULL) napi_throw(env, err);
    return NULL;
  }
  d->initialized = true;
  __atomic_fetch_add(&live_streams, 1, __ATOMIC_RELAXED);
  if (napi_wrap(env, self, d, finalize, NULL, NULL) != napi_ok) {
    release(d);
    free(d);
    throw_last(env, "napi_wrap");
    return NULL;
  }
  return self;
}

// Runs on a thread-pool thread: no N-API calls here.
static void job_execute(napi_env env, void *data) {
  (void)env;
  Decoder *d = data;
  lzma_stream *s = &d->strm;
  s->next_in = d->in;
  s->avail_in = d->in_len;
  s->next_out = d->out;
  s->avail_out = d->out_len;
  lzma_ret ret;
  for (;;) {
    size_t in_before = s->avail_in, out_before = s->avail_out;
    ret = lzma_code(s, d->action);
    if (ret != LZMA_OK || s->avail_out == 0) break;
    if (d->action == LZMA_RUN && s->avail_in == 0) break;
    // With LZMA_FINISH a call without progress is followed by LZMA_BUF_ERROR on the
    // next one (truncated input); with LZMA_RUN it would only spin.
    if (d->action == LZMA_RUN && in_before == s->avail_in && out_before == s->avail_out) break;
  }
  d->ret = ret;
}

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref != NULL) {
    napi_delete_reference(env, *ref);
    *ref = NULL;
  }
}

// Back on the JS thread.
static void job_complete(napi_env env, napi_status status, void *data) {
  Decoder *d = data;
  napi_value cb = NULL, self = NULL;
  bool call = status == napi_ok && d->cb_ref != NULL &&
              napi_get_reference_value(env, d->cb_ref, &cb) == napi_ok && cb != NULL &&
              napi_get_reference_value(env, d->self_ref, &self) == napi_ok && self != NULL;
  size_t in_used = d->in_len - d->strm.avail_in;
  size_t out_used = d->out_len - d->strm.avail_out;
  lzma_ret ret = d->ret;

  d->strm.next_in = NULL;
  d->strm.avail_in = 0;
  d->strm.next_out = NULL;
  d->strm.avail_out = 0;
  d->in = NULL;
  d->out = NULL;
  napi_delete_async_work(env, d->work);
  d->work = NULL;
  d->busy = false;

  napi_value argv[4];
  bool failed = ret != LZMA_OK && ret != LZMA_STREAM_END;
  if (call) {
    if (failed) argv[0] = lzma_error(env, d, ret); // before release(): it reads memusage
    else napi_get_null(env, &argv[0]);
    if (argv[0] == NULL) call = false;
  }
  // A failed stream cannot continue: its memory goes now rather than at GC.
  if (d->end_pending || failed) release(d);
  if (call &&
      (napi_create_double(env, (double)in_used, &argv[1]) != napi_ok ||
       napi_create_double(env, (double)out_used, &argv[2]) != napi_ok ||
       napi_get_boolean(env, ret == LZMA_STREAM_END, &argv[3]) != napi_ok)) {
    call = false;
  }

  // The callback may start the next job, which sets new references: this job's are
  // taken out of `d` first.
  napi_ref cb_ref = d->cb_ref, self_ref = d->self_ref;
  d->cb_ref = NULL;
  d->self_ref = NULL;
  delete_ref(env, &d->in_ref);
  delete_ref(env, &d->out_ref);
  if (call) {
    napi_value ignored;
    // An exception thrown by the callback surfaces as an uncaught exception.
    napi_call_function(env, self, cb, 4, argv, &ignored);
  }
  delete_ref(env, &cb_ref);
  // Last: this may let the wrapper (and `d`) be collected.
  delete_ref(env, &self_ref);
}

static bool bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return false;
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok) return false;
  if (type != napi_uint8_array) return false;
  *data = p;
  return true;
}

// code(input: Uint8Array, output: Uint8Array, finish: boolean,
//      callback: (err, inputUsed, outputUsed, streamEnd) => void): undefined
static napi_value decoder_code(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], self;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  Decoder *d = NULL;
  CHECK(env, napi_unwrap(env, self, (void **)&d));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "code(input, output, finish, callback)");
    return NULL;
  }
  if (d->busy) {
    napi_throw_error(env, "ERR_XZ_BUSY", "XzDecoder.code() called while a previous call is running");
    return NULL;
  }
  if (!d->initialized || d->end_pending) {
    napi_throw_error(env, "ERR_XZ_ENDED", "XzDecoder.code() called after end() or an error");
    return NULL;
  }
  uint8_t *in = NULL, *out = NULL;
  size_t in_len = 0, out_len = 0;
  if (!bytes_of(env, argv[0], &in, &in_len) || !bytes_of(env, argv[1], &out, &out_len)) {
    napi_throw_type_error(env, NULL, "input and output must be Uint8Arrays");
    return NULL;
  }
  if (out_len == 0) {
    napi_throw_range_error(env, NULL, "output must not be empty");
    return NULL;
  }
  bool finish = false;
  CHECK(env, napi_get_value_bool(env, argv[2], &finish));
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[3], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "callback must be a function");
    return NULL;
  }

  napi_value name;
  CHECK(env, napi_create_string_utf8(env, "ocibuild:xz", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_async_work(env, NULL, name, job_execute, job_complete, d, &d->work));
  if (napi_create_reference(env, self, 1, &d->self_ref) != napi_ok ||
      napi_create_reference(env, argv[0], 1, &d->in_ref) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &d->out_ref) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &d->cb_ref) != napi_ok) {
    throw_last(env, "napi_create_reference");
    goto undo;
  }
  d->in = in;
  d->in_len = in_len;
  d->out = out;
  d->out_len = out_len;
  d->action = finish ? LZMA_FINISH : LZMA_RUN;
  if (napi_queue_async_work(env, d->work) != napi_ok) {
    throw_last(env, "napi_queue_async_work");
    goto undo;
  }
  d->busy = true;
  return NULL;

undo:
  delete_ref(env, &d->self_ref);
  delete_ref(env, &d->in_ref);
  delete_ref(env, &d->out_ref);
  delete_ref(env, &d->cb_ref);
  napi_delete_async_work(env, d->work);
  d->work = NULL;
  return NULL;
}

// end(): frees liblzma's memory now, or as soon as the running job completes (its
// callback is still called). Idempotent.
static napi_value decoder_end(napi_env env, napi_callback_info info) {
  napi_value self;
  CHECK(env, napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  Decoder *d = NULL;
  CHECK(env, napi_unwrap(env, self, (void **)&d));
  if (d->busy) d->end_pending = true;
  else release(d);
  return NULL;
}

// liveStreams(): the number of liblzma streams not yet ended, in the whole process.
static napi_value live_streams_get(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  CHECK(env, napi_create_int32(env, __atomic_load_n(&live_streams, __ATOMIC_RELAXED), &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor methods[] = {
    {"code", NULL, decoder_code, NULL, NULL, NULL, napi_writable | napi_configurable, NULL},
    {"end", NULL, decoder_end, NULL, NULL, NULL, napi_writable | napi_configurable, NULL},
  };
  napi_value cls, version, live;
  CHECK(env, napi_define_class(env, "XzDecoder", NAPI_AUTO_LENGTH, decoder_new, NULL,
                               sizeof methods / sizeof methods[0], methods, &cls));
  CHECK(env, napi_set_named_property(env, exports, "XzDecoder", cls));
  CHECK(env, napi_create_string_utf8(env, lzma_version_string(), NAPI_AUTO_LENGTH, &version));
  CHECK(env, napi_set_named_property(env, exports, "liblzmaVersion", version));
  CHECK(env, napi_create_function(env, "liveStreams", NAPI_AUTO_LENGTH, live_streams_get, NULL, &live));
  CHECK(env, napi_set_named_property(env, exports, "liveStreams", live));
  napi_value fn, size;
  CHECK(env, napi_create_function(env, "outputBlock", NAPI_AUTO_LENGTH, output_block, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "outputBlock", fn));
  CHECK(env, napi_create_double(env, (double)HUGE_PAGE, &size));
  CHECK(env, napi_set_named_property(env, exports, "outputBlockSize", size));
  return exports;
}
