//! A model file's bytes for decoding: the file mapped read-only where the system allows it, else
//! read into memory.

use std::path::Path;

/// A whole file's bytes, borrowed as `&[u8]` (through `Deref`).
///
/// Mapped (Linux), they are the page cache's own pages: no copy, and no fresh memory for the
/// kernel to clear first (a 90 MB MiniLM loaded in 67 ms instead of 108). The mapping is
/// private and read-only, and lasts as long as this value: the file must not be truncated or
/// rewritten meanwhile (a truncated mapping faults with SIGBUS), which is why the loaders hold it
/// only while they decode. Where mapping fails (an empty file, a pipe, another system) the file
/// is read.
pub struct FileBytes(Inner);

enum Inner {
    #[cfg(target_os = "linux")]
    Mapped {
        at: *mut std::ffi::c_void,
        len: usize,
    },
    Read(Vec<u8>),
}

impl FileBytes {
    /// The bytes of the file at `path`, which may hold at most `most` of them (checked before
    /// anything is mapped or read).
    pub fn open(path: &Path, most: u64) -> std::io::Result<FileBytes> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        let size = meta.len();
        if size > most {
            return Err(std::io::Error::other(format!("{size} bytes, more than the {most} it may have")));
        }
        let size = usize::try_from(size).map_err(|_| std::io::Error::other(format!("{size} bytes: out of memory")))?;
        #[cfg(target_os = "linux")]
        if meta.is_file() && size > 0 {
            if let Some(mapped) = map(&file, size) {
                return Ok(mapped);
            }
        }
        read_whole(file, size).map(|bytes| FileBytes(Inner::Read(bytes)))
    }
}

/// The first `len` bytes of `file` (a regular file) mapped, or `None` where they cannot be
/// (then the file is read instead).
#[cfg(target_os = "linux")]
fn map(file: &std::fs::File, len: usize) -> Option<FileBytes> {
    use std::ffi::{c_int, c_long, c_void};
    use std::os::fd::AsRawFd;
    // libc's mmap (std links libc on Linux; the `libc` crate is only in builds with OpenCL).
    extern "C" {
        fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: c_long) -> *mut c_void;
    }
    // Linux's values on x86-64 and aarch64: PROT_READ; MAP_PRIVATE, and MAP_POPULATE to map every
    // page in this one call rather than fault them in one by one while decoding.
    const PROT_READ: c_int = 1;
    const MAP_PRIVATE_POPULATE: c_int = 0x02 | 0x8000;
    // SAFETY: a fresh private read-only mapping of `len` bytes of an open regular file; the
    // kernel chooses the address. The descriptor may close afterwards: the mapping keeps the file.
    let at = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ, MAP_PRIVATE_POPULATE, file.as_raw_fd(), 0) };
    // MAP_FAILED is (void *) -1.
    (at as isize != -1).then_some(FileBytes(Inner::Mapped { at, len }))
}

/// `file`'s `size` bytes, as `std::fs::read` gives them, into memory backed in one call before
/// the read fills it ([`crate::ir::limits::prefault`]).
fn read_whole(mut file: std::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(size).map_err(|_| std::io::Error::other(format!("{size} bytes: out of memory")))?;
    crate::ir::limits::prefault(bytes.as_ptr(), size);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: the mapping is `len` readable bytes until drop; nothing in this process
            // writes it (read-only), and the type's doc says the file must not change meanwhile.
            #[cfg(target_os = "linux")]
            Inner::Mapped { at, len } => unsafe { std::slice::from_raw_parts(at.cast::<u8>(), *len) },
            Inner::Read(bytes) => bytes,
        }
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Inner::Mapped { at, len } = self.0 {
            extern "C" {
                fn munmap(addr: *mut std::ffi::c_void, len: usize) -> std::ffi::c_int;
            }
            // SAFETY: the mapping made in `map`, unmapped once; no borrow of it outlives `self`.
            unsafe { munmap(at, len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_back_whole_mapped_or_not() {
        let dir = std::env::temp_dir().join(format!("crx580-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bytes.bin");
        let want: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &want).unwrap();
        assert_eq!(&*FileBytes::open(&path, u64::MAX).unwrap(), &want[..]);
        #[cfg(target_os = "linux")]
        assert!(
            matches!(FileBytes::open(&path, u64::MAX).unwrap().0, Inner::Mapped { .. }),
            "a regular file is mapped"
        );
        let too_big = FileBytes::open(&path, 99_999).err().expect("a file over the limit is refused");
        assert_eq!(too_big.to_string(), "100000 bytes, more than the 99999 it may have");
        let empty = dir.join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        assert!(FileBytes::open(&empty, 0).unwrap().is_empty());
        assert!(FileBytes::open(&dir, u64::MAX).is_err(), "a directory is no file");
        assert!(FileBytes::open(&dir.join("missing"), u64::MAX).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
