/*
 * skr-sidecar native addon: open an SEV guest device, run one attestation-report ioctl, hand back
 * the bytes. It never parses a report; that is the TypeScript layer's job.
 *
 * Every open/ioctl/close runs on a libuv worker (napi_create_async_work): firmware requests take
 * milliseconds and the host may throttle them, so the JS thread must never block on the device.
 *
 * Exports (each returns a Promise):
 *   getReport(devicePath, userData[64], vmpl)       -> Buffer            upstream SNP_GET_REPORT
 *   getExtReport(devicePath, userData[64], vmpl)    -> {report, certs}   upstream SNP_GET_EXT_REPORT
 *   getLegacyReport(devicePath, userData[64], vmpl) -> Buffer            Azure 5.x /dev/sev guest message
 * Rejections are Errors with `code` (errno name, or ERR_SNP_FIRMWARE / ERR_SNP_RESPONSE), `errno`
 * (number, syscall failures only), `syscall` ('open' | 'ioctl') and `fwErr` (hex string, when non-zero).
 */
#include <node_api.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---- device ABI ------------------------------------------------------------------------------ */

/* Linux uAPI <linux/sev-guest.h>, restated so the addon builds against any kernel headers. */
struct snp_guest_request_ioctl {
  uint8_t msg_version;
  uint64_t req_data;
  uint64_t resp_data;
  uint64_t exitinfo2; /* bits 63:32 VMM error, bits 31:0 firmware error */
};

struct snp_report_req {
  uint8_t user_data[64];
  uint32_t vmpl;
  uint8_t rsvd[28];
};

struct snp_ext_report_req {
  struct snp_report_req data;
  uint64_t certs_address;
  uint32_t certs_len;
};

/* Azure's pre-upstream /dev/sev guest-message ioctl argument (System V layout). */
struct sev_legacy_guest_msg {
  uint8_t req_msg_type;
  uint8_t rsp_msg_type;
  uint8_t msg_version;
  uint16_t request_len;
  uint64_t request_uaddr;
  uint16_t response_len;
  uint64_t response_uaddr;
  uint32_t error;
};

_Static_assert(sizeof(struct snp_guest_request_ioctl) == 32, "snp_guest_request_ioctl is 32 bytes");
_Static_assert(offsetof(struct snp_guest_request_ioctl, req_data) == 8, "req_data at 8");
_Static_assert(offsetof(struct snp_guest_request_ioctl, resp_data) == 16, "resp_data at 16");
_Static_assert(offsetof(struct snp_guest_request_ioctl, exitinfo2) == 24, "exitinfo2 at 24");
_Static_assert(sizeof(struct snp_report_req) == 96, "snp_report_req is 96 bytes");
_Static_assert(offsetof(struct snp_report_req, vmpl) == 64, "vmpl at 64");
_Static_assert(offsetof(struct snp_ext_report_req, certs_address) == 96, "certs_address at 96");
_Static_assert(offsetof(struct snp_ext_report_req, certs_len) == 104, "certs_len at 104");
_Static_assert(sizeof(struct snp_ext_report_req) == 112, "snp_ext_report_req is 112 bytes");
_Static_assert(offsetof(struct sev_legacy_guest_msg, request_len) == 4, "request_len at 4");
_Static_assert(offsetof(struct sev_legacy_guest_msg, request_uaddr) == 8, "request_uaddr at 8");
_Static_assert(offsetof(struct sev_legacy_guest_msg, response_len) == 16, "response_len at 16");
_Static_assert(offsetof(struct sev_legacy_guest_msg, response_uaddr) == 24, "response_uaddr at 24");
_Static_assert(offsetof(struct sev_legacy_guest_msg, error) == 32, "error at 32");
_Static_assert(sizeof(struct sev_legacy_guest_msg) == 40, "legacy guest message is 40 bytes");

#define SNP_GET_REPORT_IOC 0xC0205300UL
#define SNP_GET_EXT_REPORT_IOC 0xC0205302UL
#define SEV_LEGACY_GUEST_MSG_IOC 0xC0285301UL

#if defined(__linux__) && defined(_IOWR)
_Static_assert(_IOWR('S', 0x0, struct snp_guest_request_ioctl) == SNP_GET_REPORT_IOC, "SNP_GET_REPORT");
_Static_assert(_IOWR('S', 0x2, struct snp_guest_request_ioctl) == SNP_GET_EXT_REPORT_IOC, "SNP_GET_EXT_REPORT");
_Static_assert(_IOWR('S', 0x1, struct sev_legacy_guest_msg) == SEV_LEGACY_GUEST_MSG_IOC, "legacy guest msg");
#endif

#define SNP_RESP_SIZE 4000u     /* struct snp_report_resp */
#define LEGACY_RESP_SIZE 1280u  /* what Azure's driver expects for MSG_REPORT_RSP */
#define REPORT_OFFSET 0x20u     /* MSG_REPORT_RSP: status, report_size, reserved, then the report */
#define LEGACY_REQ_MSG_TYPE 5   /* SNP_MSG_REPORT_REQ */
#define LEGACY_RSP_MSG_TYPE 6   /* SNP_MSG_REPORT_RSP */
#define VMM_ERR_INVALID_LEN 1u  /* exitinfo2 >> 32; older kernels wrote fw_err 0x100000000: same bits */
#define CERTS_MAX (1u << 20)    /* refuse absurd host certificate sizes instead of allocating them */
#define EXT_REPORT_PASSES 3     /* 0-length probe, sized call, one retry if the host's blob grew */

/* ---- helpers --------------------------------------------------------------------------------- */

/* memset that the optimiser may not drop: buffers are wiped before free. */
static void wipe(void *p, size_t n) {
  volatile uint8_t *v = (volatile uint8_t *)p;
  while (n--) *v++ = 0;
}

static void wipe_free(void *p, size_t n) {
  if (p == NULL) return;
  wipe(p, n);
  free(p);
}

static const char *errno_name(int e) {
  switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOTTY: return "ENOTTY";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ELOOP: return "ELOOP";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return NULL;
  }
}

static size_t page_size(void) {
  long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? (size_t)p : 4096u;
}

static uint32_t read_u32le(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- one request ----------------------------------------------------------------------------- */

typedef enum { OP_REPORT, OP_EXT_REPORT, OP_LEGACY } op_kind;
typedef enum { OK, FAIL_ERRNO, FAIL_FIRMWARE, FAIL_RESPONSE } outcome;

static const char *const OP_API[] = {"getReport", "getExtReport", "getLegacyReport"};
static const char *const OP_IOCTL[] = {"SNP_GET_REPORT", "SNP_GET_EXT_REPORT", "SEV_SNP_GUEST_MSG_REPORT"};

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  op_kind op;
  char *device;
  uint8_t user_data[64];
  uint32_t vmpl;
  /* results, written on the worker and read in complete() */
  outcome result;
  int err;              /* errno for FAIL_ERRNO */
  const char *syscall;  /* "open" | "ioctl" */
  uint64_t fw_err;      /* exitinfo2, legacy `error`, or the response status */
  uint32_t report_size; /* for FAIL_RESPONSE */
  uint8_t *resp;
  size_t resp_size;
  uint8_t *certs;
  size_t certs_len;
} job_t;

static void fail_errno(job_t *j, const char *syscall, int err) {
  j->result = FAIL_ERRNO;
  j->syscall = syscall;
  j->err = err;
}

static void fill_report_req(const job_t *j, struct snp_report_req *req) {
  memset(req, 0, sizeof(*req));
  memcpy(req->user_data, j->user_data, sizeof(req->user_data));
  req->vmpl = j->vmpl;
}

/* MSG_REPORT_RSP: u32 status, u32 report_size, 24 reserved bytes, then the report. */
static void check_response(job_t *j) {
  uint32_t status = read_u32le(j->resp);
  uint32_t size = read_u32le(j->resp + 4);
  if (status != 0) {
    j->result = FAIL_FIRMWARE;
    j->syscall = "ioctl";
    j->fw_err = status;
  } else if (size == 0 || size > j->resp_size - REPORT_OFFSET) {
    j->result = FAIL_RESPONSE;
    j->syscall = "ioctl";
    j->report_size = size;
  } else {
    j->result = OK;
    j->report_size = size;
  }
}

static void run_report(job_t *j, int fd) {
  struct snp_report_req req;
  struct snp_guest_request_ioctl io;
  fill_report_req(j, &req);
  memset(&io, 0, sizeof(io));
  io.msg_version = 1;
  io.req_data = (uint64_t)(uintptr_t)&req;
  io.resp_data = (uint64_t)(uintptr_t)j->resp;
  if (ioctl(fd, SNP_GET_REPORT_IOC, &io) < 0) {
    int e = errno;
    j->fw_err = io.exitinfo2;
    fail_errno(j, "ioctl", e);
  } else {
    check_response(j);
  }
  wipe(&req, sizeof(req));
}

/*
 * Two-pass extended report: probe with no certificate buffer; a host that holds certificates
 * answers EIO with VMM error INVALID_LEN and the kernel writes the size it needs back into
 * certs_len. A host without certificates simply succeeds, and certs stays empty.
 */
static void run_ext_report(job_t *j, int fd) {
  struct snp_ext_report_req req;
  struct snp_guest_request_ioctl io;
  uint8_t *certs = NULL;
  size_t certs_len = 0;
  size_t page = page_size();

  for (int pass = 0; pass < EXT_REPORT_PASSES; pass++) {
    memset(&req, 0, sizeof(req));
    fill_report_req(j, &req.data);
    req.certs_address = (uint64_t)(uintptr_t)certs;
    req.certs_len = (uint32_t)certs_len;
    memset(j->resp, 0, j->resp_size);
    memset(&io, 0, sizeof(io));
    io.msg_version = 1;
    io.req_data = (uint64_t)(uintptr_t)&req;
    io.resp_data = (uint64_t)(uintptr_t)j->resp;

    if (ioctl(fd, SNP_GET_EXT_REPORT_IOC, &io) == 0) {
      check_response(j);
      if (j->result == OK) {
        j->certs = certs;
        j->certs_len = certs_len;
        certs = NULL;
      }
      break;
    }
    int e = errno;
    size_t needed = req.certs_len;
    if (e == EIO && (io.exitinfo2 >> 32) == VMM_ERR_INVALID_LEN && needed > certs_len &&
        needed <= CERTS_MAX && pass + 1 < EXT_REPORT_PASSES) {
      /* The kernel only accepts whole pages. */
      needed = (needed + page - 1) / page * page;
      wipe_free(certs, certs_len);
      certs_len = 0;
      certs = calloc(1, needed);
      if (certs == NULL) {
        fail_errno(j, "ioctl", ENOMEM);
        break;
      }
      certs_len = needed;
      continue;
    }
    j->fw_err = io.exitinfo2;
    fail_errno(j, "ioctl", e);
    break;
  }
  wipe_free(certs, certs_len);
  wipe(&req, sizeof(req));
}

static void run_legacy(job_t *j, int fd) {
  struct snp_report_req req;
  struct sev_legacy_guest_msg msg;
  fill_report_req(j, &req);
  memset(&msg, 0, sizeof(msg));
  msg.req_msg_type = LEGACY_REQ_MSG_TYPE;
  msg.rsp_msg_type = LEGACY_RSP_MSG_TYPE;
  msg.msg_version = 1;
  msg.request_len = (uint16_t)sizeof(req);
  msg.request_uaddr = (uint64_t)(uintptr_t)&req;
  msg.response_len = (uint16_t)j->resp_size;
  msg.response_uaddr = (uint64_t)(uintptr_t)j->resp;
  if (ioctl(fd, SEV_LEGACY_GUEST_MSG_IOC, &msg) < 0) {
    int e = errno;
    j->fw_err = msg.error;
    fail_errno(j, "ioctl", e);
  } else if (msg.error != 0) {
    /* Success from the driver but an error word from the firmware: fail closed. */
    j->result = FAIL_FIRMWARE;
    j->syscall = "ioctl";
    j->fw_err = msg.error;
  } else {
    check_response(j);
  }
  wipe(&req, sizeof(req));
}

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *j = (job_t *)data;
  j->resp_size = j->op == OP_LEGACY ? LEGACY_RESP_SIZE : SNP_RESP_SIZE;
  j->resp = calloc(1, j->resp_size);
  if (j->resp == NULL) {
    j->resp_size = 0;
    fail_errno(j, "ioctl", ENOMEM);
    return;
  }
  int fd;
  do {
    fd = open(j->device, O_RDWR | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    fail_errno(j, "open", errno);
    return;
  }
  switch (j->op) {
    case OP_REPORT: run_report(j, fd); break;
    case OP_EXT_REPORT: run_ext_report(j, fd); break;
    case OP_LEGACY: run_legacy(j, fd); break;
  }
  close(fd);
}

/* ---- completion on the JS thread ------------------------------------------------------------- */

static void free_job(job_t *j) {
  wipe_free(j->resp, j->resp_size);
  wipe_free(j->certs, j->certs_len);
  free(j->device);
  wipe(j, sizeof(*j));
  free(j);
}

static napi_value make_error(napi_env env, const job_t *j) {
  char msg[1024];
  char fw[32] = "";
  char errname[24];
  const char *code;
  if (j->fw_err != 0) snprintf(fw, sizeof(fw), "0x%llx", (unsigned long long)j->fw_err);

  if (j->result == FAIL_ERRNO) {
    const char *name = errno_name(j->err);
    if (name == NULL) {
      snprintf(errname, sizeof(errname), "ERRNO_%d", j->err);
      name = errname;
    }
    code = name;
    int n;
    if (strcmp(j->syscall, "open") == 0) {
      n = snprintf(msg, sizeof(msg), "open %s failed: %s (%s)", j->device, name, strerror(j->err));
    } else {
      n = snprintf(msg, sizeof(msg), "ioctl %s on %s failed: %s (%s)", OP_IOCTL[j->op], j->device, name,
                   strerror(j->err));
    }
    if (fw[0] != '\0' && n > 0 && (size_t)n < sizeof(msg)) {
      snprintf(msg + n, sizeof(msg) - (size_t)n, ", exitinfo2 %s", fw);
    }
  } else if (j->result == FAIL_FIRMWARE) {
    code = "ERR_SNP_FIRMWARE";
    snprintf(msg, sizeof(msg), "ioctl %s on %s: firmware returned status %s", OP_IOCTL[j->op], j->device, fw);
  } else {
    code = "ERR_SNP_RESPONSE";
    snprintf(msg, sizeof(msg), "ioctl %s on %s: response claims a %u-byte report, which does not fit", OP_IOCTL[j->op],
             j->device, j->report_size);
  }

  napi_value err, v_code, v_msg, v;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &v_code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &v_msg);
  napi_create_error(env, v_code, v_msg, &err);
  napi_create_string_utf8(env, j->syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  if (j->result == FAIL_ERRNO) {
    napi_create_int32(env, j->err, &v);
    napi_set_named_property(env, err, "errno", v);
  }
  if (fw[0] != '\0') {
    napi_create_string_utf8(env, fw, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, err, "fwErr", v);
  }
  return err;
}

static napi_value make_result(napi_env env, const job_t *j) {
  napi_value report;
  napi_create_buffer_copy(env, j->report_size, j->resp + REPORT_OFFSET, NULL, &report);
  if (j->op != OP_EXT_REPORT) return report;
  napi_value obj, certs;
  napi_create_buffer_copy(env, j->certs_len, j->certs_len ? (const void *)j->certs : (const void *)"", NULL, &certs);
  napi_create_object(env, &obj);
  napi_set_named_property(env, obj, "report", report);
  napi_set_named_property(env, obj, "certs", certs);
  return obj;
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = (job_t *)data;
  if (status != napi_ok) {
    napi_value code, msg, err;
    napi_create_string_utf8(env, "ERR_ASYNC_WORK", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, "the device request was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  } else if (j->result == OK) {
    napi_resolve_deferred(env, j->deferred, make_result(env, j));
  } else {
    napi_reject_deferred(env, j->deferred, make_error(env, j));
  }
  napi_delete_async_work(env, j->work);
  free_job(j);
}

/* ---- argument validation and dispatch -------------------------------------------------------- */

static napi_value throw_type(napi_env env, const char *fn, const char *what) {
  char msg[256];
  snprintf(msg, sizeof(msg), "%s: %s", fn, what);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static napi_value start(napi_env env, napi_callback_info info, op_kind op) {
  const char *fn = OP_API[op];
  size_t argc = 3;
  napi_value argv[3];
  napi_valuetype t;
  char msg[256];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) return throw_type(env, fn, "expected (devicePath, userData, vmpl)");

  /* devicePath: non-empty string without NUL (a NUL would silently open a different path). */
  size_t plen = 0;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_string) return throw_type(env, fn, "devicePath must be a string");
  napi_get_value_string_utf8(env, argv[0], NULL, 0, &plen);
  if (plen == 0) return throw_type(env, fn, "devicePath must not be empty");
  if (plen >= 4096) return throw_range(env, "devicePath is too long");
  char *device = malloc(plen + 1);
  if (device == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], device, plen + 1, &plen);
  if (strlen(device) != plen) {
    free(device);
    return throw_type(env, fn, "devicePath must not contain NUL");
  }

  /* userData: a Uint8Array (Buffer) of exactly 64 bytes. */
  bool is_ta = false;
  napi_typedarray_type ta_type;
  size_t ud_len = 0;
  void *ud = NULL;
  napi_is_typedarray(env, argv[1], &is_ta);
  if (is_ta) napi_get_typedarray_info(env, argv[1], &ta_type, &ud_len, &ud, NULL, NULL);
  if (!is_ta || ta_type != napi_uint8_array) {
    free(device);
    return throw_type(env, fn, "userData must be a Buffer");
  }
  if (ud_len != 64) {
    free(device);
    snprintf(msg, sizeof(msg), "%s: userData must be exactly 64 bytes, got %zu", fn, ud_len);
    return throw_range(env, msg);
  }

  /* vmpl: integer 0..3. */
  double vmpl = -1;
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_number) {
    free(device);
    return throw_type(env, fn, "vmpl must be a number");
  }
  napi_get_value_double(env, argv[2], &vmpl);
  if (!(vmpl >= 0 && vmpl <= 3) || vmpl != (double)(int)vmpl) {
    free(device);
    snprintf(msg, sizeof(msg), "%s: vmpl must be an integer 0..3, got %g", fn, vmpl);
    return throw_range(env, msg);
  }

  job_t *j = calloc(1, sizeof(job_t));
  if (j == NULL) {
    free(device);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->op = op;
  j->device = device;
  memcpy(j->user_data, ud, 64);
  j->vmpl = (uint32_t)vmpl;

  napi_value promise, resource;
  snprintf(msg, sizeof(msg), "sev_guest:%s", fn);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &resource);
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_async_work(env, NULL, resource, execute, complete, j, &j->work) != napi_ok) {
    free_job(j);
    napi_throw_error(env, "ERR_ASYNC_WORK", "could not schedule the device request");
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    free_job(j);
    napi_throw_error(env, "ERR_ASYNC_WORK", "could not queue the device request");
    return NULL;
  }
  return promise;
}

static napi_value get_report(napi_env env, napi_callback_info info) { return start(env, info, OP_REPORT); }
static napi_value get_ext_report(napi_env env, napi_callback_info info) { return start(env, info, OP_EXT_REPORT); }
static napi_value get_legacy_report(napi_env env, napi_callback_info info) { return start(env, info, OP_LEGACY); }

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"getReport", NULL, get_report, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getExtReport", NULL, get_ext_report, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getLegacyReport", NULL, get_legacy_report, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
