# Built by native/build.mjs (npm's install script); see there.
{
  "targets": [
    {
      "target_name": "ocibuild_xz",
      "sources": ["xz.c"],
      "libraries": ["-llzma"],
      "cflags_c": ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "ocibuild_fs",
      "sources": ["xattr.c"],
      "cflags_c": ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
