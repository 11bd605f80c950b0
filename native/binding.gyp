{
  "targets": [
    {
      "target_name": "sev_guest",
      "sources": ["src/sev_guest.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-fvisibility=hidden"]
    }
  ]
}
