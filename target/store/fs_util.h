// fs_util: small POSIX file-system helpers for the chunk store.
//
// Promises: every function reports failure as a Status (never throws, never
// aborts); WriteFileAtomic leaves either the old file or the complete new one
// at `path`, durable once it returns (temp file + fsync + rename + fsync dir).
#pragma once

#include <cstdint>
#include <string>

#include "target/common/status.h"

namespace ferry::store {

// Writes `data` to `path` atomically and durably.
Status WriteFileAtomic(const std::string& path, const std::string& data);
// Whole file into `out`.
Status ReadWholeFile(const std::string& path, std::string* out);
// fsync(2) of a directory (or file) by path.
Status FsyncPath(const std::string& path);
// rm -r; a missing path is not an error.
Status RemoveTree(const std::string& path);
// A random non-zero 64-bit id (getrandom).
uint64_t RandomId();
// "0123456789abcdef" style, 16 lowercase hex digits.
std::string Hex16(uint64_t v);
bool ParseHex16(const std::string& s, uint64_t* v);
// Copies `len` bytes (or to EOF) from src to dst (both at offset 0): FICLONE
// when the file system can share extents, else copy_file_range, else read/write.
Status CopyFileData(int src_fd, int dst_fd);
// Full pread/pwrite loops. PreadFull zero-fills past end of file.
Status PreadFull(int fd, char* buf, uint64_t len, uint64_t off);
Status PwriteFull(int fd, const char* buf, uint64_t len, uint64_t off);

}  // namespace ferry::store
