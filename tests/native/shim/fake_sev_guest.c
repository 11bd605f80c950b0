/*
 * LD_PRELOAD shim that turns one path (env FAKE_SEV_PATH) into a fake SEV guest device, so the real
 * addon binary runs its real open/ioctl/close code paths against a device that checks the ABI the
 * way the kernel does. Test-only; built by the tests in tests/native/ with
 *   gcc -shared -fPIC -o shim.so fake_sev_guest.c -ldl
 *
 * Environment:
 *   FAKE_SEV_PATH             the path to fake (anything else passes through to libc)
 *   FAKE_SEV_REPORT_FILE      bytes returned as the report (at 0x20 of the response)
 *   FAKE_SEV_CERTS_FILE       certificate blob for SNP_GET_EXT_REPORT (absent/empty: host has none)
 *   FAKE_SEV_EXPECT_USERDATA  128 hex chars the request's user_data must equal
 *   FAKE_SEV_EXPECT_VMPL      decimal VMPL the request must carry
 *   FAKE_SEV_FAIL_ERRNO       make every ioctl fail with this errno ...
 *   FAKE_SEV_FAIL_EXITINFO2   ... and this exitinfo2 / legacy error word (hex)
 *   FAKE_SEV_RESP_STATUS      non-zero firmware status to put in the response (hex)
 *   FAKE_SEV_TRACE            log every ioctl to stderr
 *   FAKE_SEV_DELAY_MS         hold each ioctl this long, so overlapping callers become visible
 * Overlapping ioctls on fake fds are reported as "fake_sev_guest: overlapping ioctl" on stderr.
 * ABI mismatches fail with -1/EINVAL and a "fake_sev_guest: ..." line on stderr saying why.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct guest_req {
  uint8_t msg_version;
  uint64_t req_data;
  uint64_t resp_data;
  uint64_t exitinfo2;
};
struct report_req {
  uint8_t user_data[64];
  uint32_t vmpl;
  uint8_t rsvd[28];
};
struct ext_report_req {
  struct report_req data;
  uint64_t certs_address;
  uint32_t certs_len;
};
struct legacy_msg {
  uint8_t req_msg_type, rsp_msg_type, msg_version;
  uint16_t request_len;
  uint64_t request_uaddr;
  uint16_t response_len;
  uint64_t response_uaddr;
  uint32_t error;
};

#define IOC_REPORT 0xC0205300UL
#define IOC_EXT_REPORT 0xC0205302UL
#define IOC_LEGACY 0xC0285301UL
#define PAGE 4096u
#define FW_BLOB_MAX 0x4000u /* the kernel's SEV_FW_BLOB_MAX_SIZE */
#define MAX_FDS 65536

static unsigned char fake_fd[MAX_FDS];

static void mark(int fd, unsigned char v) {
  if (fd >= 0 && fd < MAX_FDS) __atomic_store_n(&fake_fd[fd], v, __ATOMIC_SEQ_CST);
}
static int is_fake_fd(int fd) {
  return fd >= 0 && fd < MAX_FDS && __atomic_load_n(&fake_fd[fd], __ATOMIC_SEQ_CST);
}
static int is_fake_path(const char *p) {
  const char *f = getenv("FAKE_SEV_PATH");
  return f != NULL && p != NULL && strcmp(f, p) == 0;
}

static void *real(const char *sym) {
  void *f = dlsym(RTLD_NEXT, sym);
  if (f == NULL) {
    fprintf(stderr, "fake_sev_guest: no libc symbol %s\n", sym);
    abort();
  }
  return f;
}

/* ---- open family: the fake device is /dev/null underneath, remembered by fd --------------- */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);

static int open_fake(void) {
  int fd = ((open_fn)real("open"))("/dev/null", O_RDWR | O_CLOEXEC);
  mark(fd, 1);
  return fd;
}

#define TAKE_MODE(flags)                                                      \
  mode_t mode = 0;                                                            \
  if ((flags) & O_CREAT || ((flags) & O_TMPFILE) == O_TMPFILE) {              \
    va_list ap;                                                               \
    va_start(ap, flags);                                                      \
    mode = va_arg(ap, mode_t);                                                \
    va_end(ap);                                                               \
  }

int open(const char *path, int flags, ...) {
  TAKE_MODE(flags);
  if (is_fake_path(path)) return open_fake();
  return ((open_fn)real("open"))(path, flags, mode);
}
int open64(const char *path, int flags, ...) {
  TAKE_MODE(flags);
  if (is_fake_path(path)) return open_fake();
  return ((open_fn)real("open64"))(path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
  TAKE_MODE(flags);
  if (is_fake_path(path)) return open_fake();
  return ((openat_fn)real("openat"))(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
  TAKE_MODE(flags);
  if (is_fake_path(path)) return open_fake();
  return ((openat_fn)real("openat64"))(dirfd, path, flags, mode);
}
/* _FORTIFY_SOURCE builds call these. */
int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open64(path, flags); }

int close(int fd) {
  mark(fd, 0);
  return ((int (*)(int))real("close"))(fd);
}

/* ---- the device ---------------------------------------------------------------------------- */

static int reject(const char *why) {
  fprintf(stderr, "fake_sev_guest: %s\n", why);
  errno = EINVAL;
  return -1;
}

static size_t read_file(const char *env, uint8_t *buf, size_t cap) {
  const char *path = getenv(env);
  if (path == NULL || *path == '\0') return 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

static int check_report_req(const struct report_req *r) {
  const char *hex = getenv("FAKE_SEV_EXPECT_USERDATA");
  if (hex != NULL) {
    if (strlen(hex) != 128) return reject("FAKE_SEV_EXPECT_USERDATA must be 128 hex chars");
    for (int i = 0; i < 64; i++) {
      unsigned int b;
      if (sscanf(hex + 2 * i, "%2x", &b) != 1) return reject("bad FAKE_SEV_EXPECT_USERDATA");
      if (r->user_data[i] != (uint8_t)b) {
        char why[96];
        snprintf(why, sizeof(why), "user_data mismatch at byte %d: got %02x want %02x", i, r->user_data[i], b);
        return reject(why);
      }
    }
  }
  const char *vmpl = getenv("FAKE_SEV_EXPECT_VMPL");
  if (vmpl != NULL && r->vmpl != (uint32_t)strtoul(vmpl, NULL, 10)) {
    char why[96];
    snprintf(why, sizeof(why), "vmpl mismatch: got %u want %s", r->vmpl, vmpl);
    return reject(why);
  }
  for (size_t i = 0; i < sizeof(r->rsvd); i++) {
    if (r->rsvd[i] != 0) return reject("reserved request bytes are not zero");
  }
  return 0;
}

/* Injected failure: returns 1 (and sets errno / error word) when FAKE_SEV_FAIL_ERRNO is set. */
static int injected_failure(uint64_t *exitinfo2) {
  const char *e = getenv("FAKE_SEV_FAIL_ERRNO");
  if (e == NULL) return 0;
  const char *x = getenv("FAKE_SEV_FAIL_EXITINFO2");
  *exitinfo2 = x != NULL ? strtoull(x, NULL, 16) : 0;
  errno = atoi(e);
  return 1;
}

/* Response: u32 status, u32 report_size, reserved, report at 0x20. */
static void fill_response(uint8_t *resp, size_t size) {
  uint8_t report[4000];
  size_t n = read_file("FAKE_SEV_REPORT_FILE", report, sizeof(report));
  if (n > size - 0x20) n = size - 0x20;
  const char *st = getenv("FAKE_SEV_RESP_STATUS");
  uint32_t status = st != NULL ? (uint32_t)strtoul(st, NULL, 16) : 0;
  uint32_t report_size = (uint32_t)n;
  memset(resp, 0, size);
  memcpy(resp, &status, 4);
  memcpy(resp + 4, &report_size, 4);
  if (status == 0) memcpy(resp + 0x20, report, n);
}

static int do_report(struct guest_req *io) {
  if (io->msg_version != 1) return reject("msg_version must be 1");
  if (io->req_data == 0 || io->resp_data == 0) return reject("req_data/resp_data must not be null");
  if (check_report_req((const struct report_req *)(uintptr_t)io->req_data) != 0) return -1;
  if (injected_failure(&io->exitinfo2)) return -1;
  io->exitinfo2 = 0;
  fill_response((uint8_t *)(uintptr_t)io->resp_data, 4000);
  return 0;
}

static int do_ext_report(struct guest_req *io) {
  if (io->msg_version != 1) return reject("msg_version must be 1");
  if (io->req_data == 0 || io->resp_data == 0) return reject("req_data/resp_data must not be null");
  struct ext_report_req *req = (struct ext_report_req *)(uintptr_t)io->req_data;
  if (check_report_req(&req->data) != 0) return -1;
  if (getenv("FAKE_SEV_TRACE") != NULL) {
    fprintf(stderr, "fake_sev_guest: SNP_GET_EXT_REPORT certs_len=%u certs_address=%s\n", req->certs_len,
            req->certs_address ? "set" : "null");
  }
  if (injected_failure(&io->exitinfo2)) return -1;

  uint8_t blob[FW_BLOB_MAX];
  size_t n = read_file("FAKE_SEV_CERTS_FILE", blob, sizeof(blob));
  int wants = req->certs_len != 0 && req->certs_address != 0;
  /* Kernel rules: certs_len is whole pages and at most SEV_FW_BLOB_MAX_SIZE. */
  if (wants && (req->certs_len % PAGE != 0 || req->certs_len > FW_BLOB_MAX)) {
    return reject("certs_len must be a page multiple no larger than 16 KiB");
  }
  if (n > 0) {
    uint32_t needed = (uint32_t)((n + PAGE - 1) / PAGE * PAGE);
    if (!wants || req->certs_len < needed) {
      req->certs_len = needed;
      io->exitinfo2 = 1ULL << 32; /* VMM error INVALID_LEN */
      errno = EIO;
      return -1;
    }
    uint8_t *dst = (uint8_t *)(uintptr_t)req->certs_address;
    memset(dst, 0, req->certs_len);
    memcpy(dst, blob, n);
  } else if (wants) {
    memset((void *)(uintptr_t)req->certs_address, 0, req->certs_len);
  }
  io->exitinfo2 = 0;
  fill_response((uint8_t *)(uintptr_t)io->resp_data, 4000);
  return 0;
}

static int do_legacy(struct legacy_msg *m) {
  if (m->req_msg_type != 5 || m->rsp_msg_type != 6) return reject("legacy message types must be 5/6");
  if (m->msg_version != 1) return reject("legacy msg_version must be 1");
  if (m->request_len != 96 || m->response_len != 1280) return reject("legacy request_len/response_len must be 96/1280");
  if (m->request_uaddr == 0 || m->response_uaddr == 0) return reject("legacy uaddrs must not be null");
  if (check_report_req((const struct report_req *)(uintptr_t)m->request_uaddr) != 0) return -1;
  uint64_t word = 0;
  if (injected_failure(&word)) {
    m->error = (uint32_t)word;
    return -1;
  }
  m->error = 0;
  fill_response((uint8_t *)(uintptr_t)m->response_uaddr, 1280);
  return 0;
}

static int in_flight;

static int dispatch(unsigned long request, void *arg) {
  switch (request) {
    case IOC_REPORT: return do_report((struct guest_req *)arg);
    case IOC_EXT_REPORT: return do_ext_report((struct guest_req *)arg);
    case IOC_LEGACY: return do_legacy((struct legacy_msg *)arg);
    default: errno = ENOTTY; return -1;
  }
}

int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (!is_fake_fd(fd)) return ((int (*)(int, unsigned long, ...))real("ioctl"))(fd, request, arg);
  if (getenv("FAKE_SEV_TRACE") != NULL) fprintf(stderr, "fake_sev_guest: ioctl 0x%lx\n", request);
  int now = __atomic_add_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
  if (now > 1) fprintf(stderr, "fake_sev_guest: overlapping ioctl (%d in flight)\n", now);
  const char *delay = getenv("FAKE_SEV_DELAY_MS");
  if (delay != NULL) usleep((useconds_t)atoi(delay) * 1000u);
  int rc = dispatch(request, arg);
  int saved = errno;
  __atomic_sub_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
  errno = saved;
  return rc;
}
