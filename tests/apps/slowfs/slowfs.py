"""A FUSE file system whose writes take a fixed time: the "log file on a slow
NFS mount" of the tracing guides, for real. Files live in memory.

usage: slowfs.py MOUNTPOINT [--delay-ms 400]
"""
import argparse
import errno
import stat
import threading
import time

from fuse import FUSE, FuseOSError, Operations


class SlowFs(Operations):
    def __init__(self, delay):
        self.delay = delay
        self.files = {}
        self.mutex = threading.Lock()
        self.now = time.time()

    def _attrs(self, mode, size):
        return {
            "st_mode": mode,
            "st_nlink": 1,
            "st_size": size,
            "st_ctime": self.now,
            "st_mtime": self.now,
            "st_atime": self.now,
            "st_uid": 0,
            "st_gid": 0,
        }

    def getattr(self, path, fh=None):
        if path == "/":
            return self._attrs(stat.S_IFDIR | 0o755, 0)
        with self.mutex:
            if path not in self.files:
                raise FuseOSError(errno.ENOENT)
            return self._attrs(stat.S_IFREG | 0o644, len(self.files[path]))

    def readdir(self, path, fh):
        with self.mutex:
            return [".", ".."] + [p[1:] for p in self.files]

    def create(self, path, mode, fi=None):
        with self.mutex:
            self.files.setdefault(path, bytearray())
        return 0

    def open(self, path, flags):
        with self.mutex:
            if path not in self.files:
                raise FuseOSError(errno.ENOENT)
        return 0

    def truncate(self, path, length, fh=None):
        with self.mutex:
            self.files.setdefault(path, bytearray())[length:] = b""

    def read(self, path, size, offset, fh):
        with self.mutex:
            return bytes(self.files.get(path, b"")[offset : offset + size])

    def write(self, path, data, offset, fh):
        # The slowness under test: the writer's syscall blocks this long.
        time.sleep(self.delay)
        with self.mutex:
            buf = self.files.setdefault(path, bytearray())
            buf[offset : offset + len(data)] = data
        return len(data)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        return 0

    def unlink(self, path):
        with self.mutex:
            self.files.pop(path, None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mountpoint")
    parser.add_argument("--delay-ms", type=int, default=400)
    args = parser.parse_args()
    FUSE(SlowFs(args.delay_ms / 1000), args.mountpoint, foreground=True, nothreads=False, allow_other=True)


if __name__ == "__main__":
    main()
