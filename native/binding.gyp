{
  "targets": [
    {
      "target_name": "clove_native",
      "sources": ["src/addon.cc", "src/errors.cc", "src/peercred.cc", "src/spawn.cc", "src/child.cc", "src/netns.cc", "src/userns.cc", "src/clone3.cc", "src/files.cc", "src/seccomp.cc", "src/enter.cc", "src/rlimit.cc",
                  "src/fast/frame.cc", "src/fast/store.cc", "src/fast/ops.cc", "src/fast/store_napi.cc", "src/fast/reactor.cc"],
      "libraries": ["-lsimdjson", "-lpthread"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=gnu++20", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    },
    {
      "target_name": "clove-init",
      "type": "executable",
      "sources": ["src/init.cc", "src/seccomp.cc"],
      "defines": ["_GNU_SOURCE"],
      "cflags_cc!": ["-std=gnu++17"],
      "cflags_cc": ["-std=gnu++20", "-O2", "-Wall", "-Wextra"],
      "ldflags": ["-static"]
    }
  ]
}
