//! Compiled program binaries on disk, so a second start compiles nothing (PoCL takes 25-44 s for a
//! large GEMM program; GPU drivers are slow too: ncnn #2182, MNN #2852).
//!
//! One file per (program name, key): the key hashes the device name, driver version, source and
//! build options, so the same program on the same device always lands in the same file (the cache
//! does not grow run after run) and any change of driver or source misses. A file starts with a
//! header that repeats the full key and a checksum of the binary: a stale, truncated or corrupt
//! file is ignored (and rewritten), never handed to the driver. Writes go to a temporary file
//! renamed into place, so a crash or a concurrent writer never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"crx580-opencl-program-v1\n";

/// The cache directory: `CRX580_CACHE_DIR`, else `$XDG_CACHE_HOME/crx580/opencl`, else
/// `~/.cache/crx580/opencl`; `None` when none can be named (nothing is cached then).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CRX580_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("crx580").join("opencl"))
}

/// What identifies one compiled program.
#[derive(Debug, Clone)]
pub struct Key {
    /// Human-readable, stored in the file's header and compared in full on load.
    text: String,
    file_name: String,
}

impl Key {
    pub fn new(program: &str, device: &str, driver: &str, source: &str, options: &str) -> Key {
        let source_hash = fnv1a(source.as_bytes());
        let text = format!("device={device}\ndriver={driver}\nsource={source_hash:016x}\noptions={options}\n");
        let stem: String = program.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let file_name = format!("{stem}-{:016x}.bin", fnv1a(text.as_bytes()));
        Key { text, file_name }
    }

    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}

/// The binary stored for `key` in `dir`, if a whole, matching one is there.
pub fn load(dir: &Path, key: &Key) -> Option<Vec<u8>> {
    let bytes = std::fs::read(dir.join(&key.file_name)).ok()?;
    let rest = bytes.strip_prefix(MAGIC)?;
    let rest = rest.strip_prefix(key.text.as_bytes())?;
    if rest.len() < 16 {
        return None;
    }
    let len = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let sum = u64::from_le_bytes(rest[8..16].try_into().ok()?);
    let binary = &rest[16..];
    (binary.len() as u64 == len && fnv1a(binary) == sum && !binary.is_empty()).then(|| binary.to_vec())
}

/// Stores `binary` for `key` in `dir`, replacing any earlier file atomically.
pub fn store(dir: &Path, key: &Key, binary: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(&key.file_name);
    let tmp = dir.join(format!(".{}.{}.tmp", key.file_name, std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(key.text.as_bytes())?;
        f.write_all(&(binary.len() as u64).to_le_bytes())?;
        f.write_all(&fnv1a(binary).to_le_bytes())?;
        f.write_all(binary)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// 64-bit FNV-1a: stable across Rust releases (std's hashers are not), enough to tell programs apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_binary_loads_back_and_damage_is_a_miss() {
        let dir = std::env::temp_dir().join(format!("crx580-cache-test-{}", std::process::id()));
        let key = Key::new("gemm.cl", "dev", "1.0", "kernel void k() {}", "-cl-std=CL1.2");
        assert!(load(&dir, &key).is_none());
        store(&dir, &key, b"binary").unwrap();
        assert_eq!(load(&dir, &key).as_deref(), Some(&b"binary"[..]));
        store(&dir, &key, b"binary2").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "a rewrite replaces, never adds");
        let other_driver = Key::new("gemm.cl", "dev", "1.1", "kernel void k() {}", "-cl-std=CL1.2");
        assert_ne!(other_driver.file_name(), key.file_name());
        let path = dir.join(key.file_name());
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(&dir, &key).is_none(), "a flipped bit fails the checksum");
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(load(&dir, &key).is_none(), "a truncated file is a miss");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
