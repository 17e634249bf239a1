// The few system calls the vhost-user host needs that Node does not offer:
// unix-socket listen/accept/connect, recvmsg/sendmsg with SCM_RIGHTS, mmap of
// a memory-region fd as an ArrayBuffer, eventfd, close, and fd readiness
// polling on Node's own event loop (a libuv uv_poll handle).
//
// Everything here is synchronous and small; the protocol lives in TypeScript.
// Errors are thrown as JS Errors whose `code` is the errno name ("EADDRINUSE")
// so that callers can map them to clear messages. Linux only.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

// vhost-user sends at most 8 fds with one message (VHOST_MEMORY_BASELINE_NREGIONS).
#define MAX_FDS 16

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, NULL, "N-API call failed: " #call);               \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char message[512];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value msg, code, error;
  const char *name = strerrorname_np(err);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_value errno_value;
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return 0;
  }
  return 1;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return 0;
  }
  return 1;
}

// A unix socket path must fit sun_path (108 bytes) with its terminating NUL:
// at most 107 bytes (unix(7)). The length is measured before copying, since
// napi_get_value_string_utf8 silently truncates to the buffer.
#define MAX_SOCKET_PATH (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

static int get_path(napi_env env, napi_value v, struct sockaddr_un *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a socket path");
    return 0;
  }
  if (len == 0 || len > MAX_SOCKET_PATH) {
    char message[160];
    snprintf(message, sizeof message,
             "socket path is %zu bytes; a unix socket path must be 1 to %zu bytes (sun_path holds %zu with its NUL)",
             len, MAX_SOCKET_PATH, MAX_SOCKET_PATH + 1);
    napi_throw_range_error(env, "ENAMETOOLONG", message);
    return 0;
  }
  napi_get_value_string_utf8(env, v, addr->sun_path, sizeof addr->sun_path, &len);
  // An embedded NUL would make the kernel see a shorter, different path.
  if (strlen(addr->sun_path) != len) {
    napi_throw_range_error(env, "EINVAL", "socket path contains a NUL byte");
    return 0;
  }
  return 1;
}

static napi_value int_value(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

// listen(path): a listening SOCK_STREAM unix socket. A stale socket file left
// by a dead server is replaced; one a live server still accepts on is not.
static napi_value Listen(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un addr;
  if (!get_args(env, info, 1, argv) || !get_path(env, argv[0], &addr)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    struct stat st;
    // Only a socket is ever replaced: anything else at the path (a regular
    // file, a directory) is the user's and is reported as ENOTSOCK.
    int exists = err == EADDRINUSE && stat(addr.sun_path, &st) == 0;
    if (exists && !S_ISSOCK(st.st_mode)) err = ENOTSOCK;
    if (exists && S_ISSOCK(st.st_mode)) {
      int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int live = probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof addr) == 0;
      if (probe >= 0) close(probe);
      if (!live && unlink(addr.sun_path) == 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        goto bound;
      }
      err = live ? EADDRINUSE : errno;
    }
    close(fd);
    return throw_errno(env, addr.sun_path, err);
  }
bound:
  if (listen(fd, 4) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "listen", err);
  }
  return int_value(env, fd);
}

// accept(fd): the connected socket (blocking, close-on-exec).
static napi_value Accept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], &fd)) return NULL;
  int conn;
  do conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
  while (conn < 0 && errno == EINTR);
  if (conn < 0) return throw_errno(env, "accept", errno);
  return int_value(env, conn);
}

// connect(path): a connected unix socket (tests play QEMU's side with it).
static napi_value Connect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un addr;
  if (!get_args(env, info, 1, argv) || !get_path(env, argv[0], &addr)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, addr.sun_path, err);
  }
  return int_value(env, fd);
}

static int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, len, (void **)data, &buffer, &offset) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "expected a Uint8Array");
    return 0;
  }
  return 1;
}

// recvmsg(fd, buf, dontWait?): { bytes, fds } — bytes 0 at end of stream,
// −1 when dontWait is set and nothing is there yet (EAGAIN). Otherwise blocks
// until some data arrives. fds passed with SCM_RIGHTS come back close-on-exec.
static napi_value RecvMsg(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  uint8_t *data;
  size_t len;
  bool dont_wait = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return NULL;
  }
  if (!get_int(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &len)) return NULL;
  if (argc > 2) napi_get_value_bool(env, argv[2], &dont_wait);
  struct iovec iov = {.iov_base = data, .iov_len = len};
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (dont_wait ? MSG_DONTWAIT : 0));
  while (n < 0 && errno == EINTR);
  if (n < 0 && !(dont_wait && (errno == EAGAIN || errno == EWOULDBLOCK))) return throw_errno(env, "recvmsg", errno);
  if (n < 0) msg.msg_controllen = 0;

  napi_value result, fds;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_array(env, &fds));
  uint32_t count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *received = (int *)CMSG_DATA(c);
    for (size_t i = 0; i < nfds; i++) {
      CHECK(napi_set_element(env, fds, count++, int_value(env, received[i])));
    }
  }
  napi_value truncated;
  CHECK(napi_get_boolean(env, (msg.msg_flags & MSG_CTRUNC) != 0, &truncated));
  CHECK(napi_set_named_property(env, result, "bytes", int_value(env, (int32_t)n)));
  CHECK(napi_set_named_property(env, result, "fds", fds));
  CHECK(napi_set_named_property(env, result, "fdsTruncated", truncated));
  return result;
}

// sendmsg(fd, buf, fds?, dontWait?): sends all of buf; fds go with the first
// byte. With dontWait (MSG_DONTWAIT, whatever the fd's own O_NONBLOCK says) a
// full socket buffer throws EAGAIN instead of blocking Node: a peer that does
// not read its replies must not be able to stop the event loop.
static napi_value SendMsg(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint8_t *data;
  size_t len;
  if (argc < 2 || !get_int(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &len)) return NULL;
  bool dont_wait = false;
  if (argc > 3) napi_get_value_bool(env, argv[3], &dont_wait);
  int fds[MAX_FDS];
  uint32_t nfds = 0;
  if (argc > 2) {
    bool is_array = false;
    napi_is_array(env, argv[2], &is_array);
    if (is_array) {
      CHECK(napi_get_array_length(env, argv[2], &nfds));
      if (nfds > MAX_FDS) {
        napi_throw_range_error(env, NULL, "too many fds");
        return NULL;
      }
      for (uint32_t i = 0; i < nfds; i++) {
        napi_value v;
        CHECK(napi_get_element(env, argv[2], i, &v));
        if (!get_int(env, v, &fds[i])) return NULL;
      }
    }
  }
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  size_t sent = 0;
  while (sent < len || (len == 0 && nfds > 0 && sent == 0)) {
    struct iovec iov = {.iov_base = data + sent, .iov_len = len - sent};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0 && sent == 0) {
      memset(&control, 0, sizeof control);
      msg.msg_control = control.buf;
      msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
      memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | (dont_wait ? MSG_DONTWAIT : 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      return throw_errno(env, "sendmsg", errno);
    }
    sent += (size_t)n;
    if (len == 0) break;
  }
  return int_value(env, (int32_t)sent);
}

typedef struct {
  void *base;
  size_t length;
} mapping_t;

static void unmap_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  mapping_t *m = hint;
  munmap(m->base, m->length);
  free(m);
}

// mmap(fd, offset, length): { buffer, delta } — a shared read-write mapping of
// [offset, offset + length) of fd. mmap wants a page-aligned offset, so the
// mapping starts at the page below `offset` and `delta` says where the
// requested range begins inside `buffer`. Unmapped when the buffer is collected.
static napi_value Mmap(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  double offset_d, length_d;
  if (!get_args(env, info, 3, argv) || !get_int(env, argv[0], &fd)) return NULL;
  if (napi_get_value_double(env, argv[1], &offset_d) != napi_ok ||
      napi_get_value_double(env, argv[2], &length_d) != napi_ok || offset_d < 0 || length_d <= 0 ||
      offset_d > 9007199254740991.0 || length_d > 9007199254740991.0) {
    napi_throw_range_error(env, NULL, "mmap offset/length out of range");
    return NULL;
  }
  long page = sysconf(_SC_PAGESIZE);
  uint64_t offset = (uint64_t)offset_d;
  uint64_t aligned = offset - offset % (uint64_t)page;
  size_t delta = (size_t)(offset - aligned);
  size_t length = (size_t)length_d + delta;
  void *base = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)aligned);
  if (base == MAP_FAILED) return throw_errno(env, "mmap", errno);
  mapping_t *m = malloc(sizeof *m);
  if (!m) {
    munmap(base, length);
    return throw_errno(env, "mmap", ENOMEM);
  }
  m->base = base;
  m->length = length;
  napi_value buffer, result;
  if (napi_create_external_arraybuffer(env, base, length, unmap_finalize, m, &buffer) != napi_ok) {
    munmap(base, length);
    free(m);
    napi_throw_error(env, "ENOTSUP", "this Node.js cannot wrap external memory in an ArrayBuffer");
    return NULL;
  }
  CHECK(napi_create_object(env, &result));
  CHECK(napi_set_named_property(env, result, "buffer", buffer));
  CHECK(napi_set_named_property(env, result, "delta", int_value(env, (int32_t)delta)));
  return result;
}

// fallocate(fd, mode, offset, length): fallocate(2) with FALLOC_FL_* `mode`,
// for punching holes (DISCARD) and zeroing ranges without writing them
// (WRITE_ZEROES); Node's fs has no way to reach it. Retries EINTR.
static napi_value Fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd, mode;
  int64_t offset, length;
  if (!get_args(env, info, 4, argv) || !get_int(env, argv[0], &fd) || !get_int(env, argv[1], &mode)) return NULL;
  if (napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      offset < 0 || length <= 0) {
    napi_throw_range_error(env, NULL, "fallocate offset/length out of range");
    return NULL;
  }
  int rc;
  do rc = fallocate(fd, mode, (off_t)offset, (off_t)length);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return throw_errno(env, "fallocate", errno);
  return NULL;
}

// fdSize(fd): st_size of fd (the bytes a memory-region fd can back: touching a
// MAP_SHARED page past the end of its file is SIGBUS, which would kill Node).
static napi_value FdSize(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0) return throw_errno(env, "fstat", errno);
  napi_value out;
  napi_create_double(env, (double)st.st_size, &out);
  return out;
}

// unmap(buffer): detach an ArrayBuffer that mmap() returned. Every view on it
// becomes empty and the backing store is released, which runs unmap_finalize:
// the mapping goes when the front-end does, not whenever the GC gets to it.
static napi_value Unmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  bool detachable = false;
  CHECK(napi_is_arraybuffer(env, argv[0], &detachable));
  if (!detachable) {
    napi_throw_type_error(env, NULL, "expected an ArrayBuffer from mmap()");
    return NULL;
  }
  CHECK(napi_detach_arraybuffer(env, argv[0]));
  return NULL;
}

// eventfd(): a non-blocking eventfd (tests play QEMU's side with it).
static napi_value EventFd(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return int_value(env, fd);
}

// setBlocking(fd, blocking)
static napi_value SetBlocking(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool blocking;
  if (!get_args(env, info, 2, argv) || !get_int(env, argv[0], &fd)) return NULL;
  CHECK(napi_get_value_bool(env, argv[1], &blocking));
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return throw_errno(env, "fcntl", errno);
  flags = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
  if (fcntl(fd, F_SETFL, flags) < 0) return throw_errno(env, "fcntl", errno);
  return NULL;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], &fd)) return NULL;
  // Linux always releases the fd, even when close reports EINTR: never retry.
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return NULL;
}

// A readiness watcher: calls back(eventsMask) on Node's loop while active.
//
// Two owners hold it: the uv handle (until uv_close's callback) and the JS
// external returned by watch() (until it is garbage-collected). It is freed
// when both have let go, so a second unwatch() on the same external, or one
// after the handle closed, finds `stopped` set in live memory and does
// nothing, instead of reading a freed watcher.
typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int stopped;
  int owners;
} watcher_t;

static void watcher_release(watcher_t *w) {
  if (--w->owners == 0) free(w);
}

static void watcher_closed(uv_handle_t *handle) {
  watcher_t *w = handle->data;
  napi_delete_reference(w->env, w->callback);
  napi_async_destroy(w->env, w->context);
  watcher_release(w);
}

static void watcher_external_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  watcher_release(data);
}

static void watcher_fired(uv_poll_t *handle, int status, int events) {
  watcher_t *w = handle->data;
  if (w->stopped) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, global, arg, result;
  // POLLERR/POLLHUP come back as a negative status: report them as "readable"
  // so that the JS side reads and sees the error or end of stream itself.
  int mask = status < 0 ? UV_READABLE : events;
  if (napi_get_reference_value(env, w->callback, &callback) == napi_ok && callback != NULL) {
    napi_get_global(env, &global);
    napi_create_int32(env, mask, &arg);
    // make_callback drains microtasks afterwards, as any I/O callback would.
    napi_make_callback(env, w->context, global, callback, 1, &arg, &result);
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void watcher_stop(watcher_t *w) {
  if (!w->stopped) {
    w->stopped = 1;
    uv_poll_stop(&w->handle);
    uv_close((uv_handle_t *)&w->handle, watcher_closed);
  }
}

// watch(fd, callback): an external handle; pass it to unwatch() to stop.
// The handle keeps Node's loop alive while it is active.
static napi_value Watch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  if (!get_args(env, info, 2, argv) || !get_int(env, argv[0], &fd)) return NULL;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_function) {
    napi_throw_type_error(env, NULL, "expected a callback");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, "watch", ENOMEM);
  w->env = env;
  w->owners = 1; // the uv handle; the external below takes the second
  int rc = uv_poll_init(loop, &w->handle, fd);
  if (rc != 0) {
    free(w);
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  w->handle.data = w;
  napi_value name;
  napi_create_string_utf8(env, "vhost-user:watch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  napi_create_reference(env, argv[1], 1, &w->callback);
  rc = uv_poll_start(&w->handle, UV_READABLE, watcher_fired);
  if (rc != 0) {
    w->stopped = 1;
    uv_close((uv_handle_t *)&w->handle, watcher_closed);
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  napi_value external;
  // The external co-owns the watcher: unwatch() stops it, and the memory goes
  // when both the closed handle and the collected external have released it.
  if (napi_create_external(env, w, watcher_external_finalize, NULL, &external) != napi_ok) {
    watcher_stop(w);
    napi_throw_error(env, NULL, "watch: cannot create the handle object");
    return NULL;
  }
  w->owners++;
  return external;
}

static napi_value Unwatch(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  void *data;
  CHECK(napi_get_value_external(env, argv[0], &data));
  watcher_stop(data);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listen", NULL, Listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"accept", NULL, Accept, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connect", NULL, Connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvmsg", NULL, RecvMsg, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendmsg", NULL, SendMsg, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mmap", NULL, Mmap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fallocate", NULL, Fallocate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fdSize", NULL, FdSize, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unmap", NULL, Unmap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventfd", NULL, EventFd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setBlocking", NULL, SetBlocking, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"watch", NULL, Watch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unwatch", NULL, Unwatch, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
