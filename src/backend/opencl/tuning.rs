//! Kernel parameters per device: `CRX580_GEMM_PARAMS` (benchmark sweeps:
//! `registers:MWI,VW,NV` or `local:MWG,NWG,KWG,MWI,NWI`), then the device's tune file written by
//! `crx580 tune` (`tune.rs`), then a table searched by device name, then by vendor/architecture,
//! then a default (CLBlast's database, ggml's fa_tune.h).
//!
//! A tune file lives in the program cache directory, one per device name, and names the full
//! device name and driver version it was measured on: a file for another driver (stale) or one
//! that does not parse (corrupt) is ignored with a warning, never trusted.

use super::device::DeviceInfo;
use crate::Result;
use std::path::{Path, PathBuf};

/// How `kernels/gemm.cl` tiles C (its comment says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmParams {
    /// No local memory: each work-item an `mwi` x `vw*nv` block in registers, `vw`-wide vectors.
    Registers { mwi: usize, vw: usize, nv: usize },
    /// `mwg` x `nwg` tiles per work-group sharing `kwg`-deep local tiles; `mwi` x `nwi` per work-item.
    Local { mwg: usize, nwg: usize, kwg: usize, mwi: usize, nwi: usize },
}

/// GCN 4.0 (Polaris/Ellesmere, the RX 580): 256 work-items, a 64x64 tile, 4x4 per work-item,
/// 8.3 KB of local memory (the legacy driver allows 32 KB per work-group). From rx580.md's CLBlast
/// entries (64x64 tiles, KWG 16-32); to be tuned on the card.
const GCN4: GemmParams = GemmParams::Local { mwg: 64, nwg: 64, kwg: 16, mwi: 4, nwi: 4 };

/// PoCL on AVX-512 CPUs: float16 vectors, an 8x32 register block per work-item, no local memory
/// (pocl.md: local memory is ordinary RAM there and barriers only cost). 12x32 (24 of the 32
/// vector registers accumulating) measured the same within the noise, and 8 rows divide every
/// ResNet channel count (a 12-row block of 64 rows recomputes 8 of them at the edge).
const POCL: GemmParams = GemmParams::Registers { mwi: 8, vw: 16, nv: 2 };

/// Anything else: a modest local-memory tiling every OpenCL 1.2 GPU runs (256 work-items, 8 KB).
const DEFAULT: GemmParams = GemmParams::Local { mwg: 32, nwg: 32, kwg: 16, mwi: 2, nwi: 2 };

/// Device-name entries: a substring of the device name and its parameters.
const BY_NAME: &[(&str, GemmParams)] =
    &[("Ellesmere", GCN4), ("gfx803", GCN4), ("Radeon RX 580", GCN4), ("Polaris", GCN4)];

/// The GEMM parameters for `device` and which entry gave them; `cache_dir` is where a tune file
/// may be (`None`: none is read).
pub fn gemm_params(device: &DeviceInfo, cache_dir: Option<&Path>) -> Result<(GemmParams, &'static str)> {
    if let Ok(text) = std::env::var("CRX580_GEMM_PARAMS") {
        return Ok((parse(&text)?, "CRX580_GEMM_PARAMS"));
    }
    if let Some(p) = cache_dir.and_then(|dir| load_tuned(dir, device)) {
        return Ok((p, "tune file"));
    }
    Ok(table_params(device))
}

/// The table's entry for `device` (no environment, no tune file) and which entry it is.
pub fn table_params(device: &DeviceInfo) -> (GemmParams, &'static str) {
    if let Some((_, p)) = BY_NAME.iter().find(|(name, _)| device.name.contains(name)) {
        return (*p, "device name");
    }
    let vendor = device.vendor.to_ascii_lowercase();
    if device.is_gpu && (vendor.contains("advanced micro devices") || vendor.starts_with("amd")) {
        return (GCN4, "AMD GPU (GCN)");
    }
    if is_pocl(device) {
        return (POCL, "PoCL");
    }
    (DEFAULT, "default")
}

/// Whether `device` is PoCL's CPU device (no local memory tiles there).
pub fn is_pocl(device: &DeviceInfo) -> bool {
    device.platform.contains("Portable Computing Language")
        || device.name.starts_with("pthread-")
        || device.name.starts_with("cpu-")
}

/// The first line of every tune file; a new layout gets a new version (old files are then stale).
const TUNE_MAGIC: &str = "crx580-opencl-tune v1";

/// Where `device`'s tune file is in `dir`: one file per device name, so re-tuning (after a
/// driver update too) replaces the file instead of adding one.
pub fn tune_file(dir: &Path, device: &DeviceInfo) -> PathBuf {
    let stem: String =
        device.name.chars().take(100).map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    dir.join(format!("tune-{stem}.txt"))
}

/// The text of a tune file: the device and driver it holds for, the winning parameters, and any
/// `# ` comment lines (what was measured).
pub fn tune_text(device: &DeviceInfo, gemm: GemmParams, comments: &[String]) -> String {
    let mut s = format!("{TUNE_MAGIC}\ndevice={}\ndriver={}\ngemm={}\n", device.name, device.driver_version, gemm);
    for c in comments {
        s.push_str(&format!("# {}\n", c.replace('\n', " ")));
    }
    s
}

/// The tuned GEMM parameters in `dir` for `device`: `None` when there is no file, and `None` with
/// a warning when the file is corrupt, made for another device or driver, or names parameters
/// that do not fit the device.
pub fn load_tuned(dir: &Path, device: &DeviceInfo) -> Option<GemmParams> {
    let path = tune_file(dir, device);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("cannot read the tune file {}: {e}; using the built-in parameters", path.display());
            return None;
        }
    };
    match parse_tuned(&text, device) {
        Ok(p) => {
            log::debug!("tuned GEMM parameters for {} from {}: {p}", device.name, path.display());
            Some(p)
        }
        Err(why) => {
            log::warn!(
                "ignoring the tune file {}: {why}; using the built-in parameters (run `crx580 tune --gemm` again)",
                path.display()
            );
            None
        }
    }
}

fn parse_tuned(bytes: &[u8], device: &DeviceInfo) -> std::result::Result<GemmParams, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    if lines.next() != Some(TUNE_MAGIC) {
        return Err(format!("it does not start with '{TUNE_MAGIC}'"));
    }
    let mut field = |name: &str| -> std::result::Result<String, String> {
        let line = lines.next().unwrap_or_default();
        line.strip_prefix(name)
            .and_then(|r| r.strip_prefix('='))
            .map(str::to_string)
            .ok_or_else(|| format!("line '{name}=...' expected, found '{line}'"))
    };
    let (name, driver, gemm) = (field("device")?, field("driver")?, field("gemm")?);
    if name != device.name {
        return Err(format!("it was tuned for device '{name}', not '{}'", device.name));
    }
    if driver != device.driver_version {
        return Err(format!("it was tuned with driver {driver}, this is {} (stale)", device.driver_version));
    }
    let params = parse(&gemm).map_err(|e| e.message)?;
    params.defines(device).map_err(|e| e.message)?;
    Ok(params)
}

impl std::fmt::Display for GemmParams {
    /// The `CRX580_GEMM_PARAMS` / tune file spelling, which [`parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            GemmParams::Registers { mwi, vw, nv } => write!(f, "registers:{mwi},{vw},{nv}"),
            GemmParams::Local { mwg, nwg, kwg, mwi, nwi } => write!(f, "local:{mwg},{nwg},{kwg},{mwi},{nwi}"),
        }
    }
}

impl std::str::FromStr for GemmParams {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<GemmParams> {
        parse(s)
    }
}

fn parse(text: &str) -> Result<GemmParams> {
    let bad = || {
        crate::err!(
            InvalidInput,
            "CRX580_GEMM_PARAMS '{text}': expected registers:MWI,VW,NV or local:MWG,NWG,KWG,MWI,NWI"
        )
    };
    let (kind, list) = text.split_once(':').ok_or_else(bad)?;
    let v: Vec<usize> =
        list.split(',').map(|s| s.trim().parse()).collect::<std::result::Result<_, _>>().map_err(|_| bad())?;
    match (kind, v.as_slice()) {
        ("registers", &[mwi, vw, nv]) => Ok(GemmParams::Registers { mwi, vw, nv }),
        ("local", &[mwg, nwg, kwg, mwi, nwi]) => Ok(GemmParams::Local { mwg, nwg, kwg, mwi, nwi }),
        _ => Err(bad()),
    }
}

impl GemmParams {
    /// The `-D` defines of gemm.cl, after checking the set fits `device`.
    pub fn defines(&self, device: &DeviceInfo) -> Result<Vec<(&'static str, String)>> {
        match *self {
            GemmParams::Registers { mwi, vw, nv } => {
                if ![2, 4, 8, 16].contains(&vw) || mwi == 0 || nv == 0 || mwi * vw * nv > 1024 {
                    crate::bail!(
                        InvalidInput,
                        "GEMM parameters {self:?}: VW must be 2, 4, 8 or 16 and the block at most 1024 values"
                    );
                }
                Ok(vec![
                    ("USE_LOCAL", "0".into()),
                    ("MWI", mwi.to_string()),
                    ("VW", vw.to_string()),
                    ("NV", nv.to_string()),
                ])
            }
            GemmParams::Local { mwg, nwg, kwg, mwi, nwi } => {
                let ok_split = mwi > 0 && nwi > 0 && kwg > 0 && mwg % mwi == 0 && nwg % nwi == 0;
                let work_items = if ok_split { (mwg / mwi) * (nwg / nwi) } else { 0 };
                let local_bytes = 4 * kwg * (mwg + 1 + nwg + 1);
                let max_wg = device.max_work_group.min(256);
                let max_local = (device.local_mem as usize).min(32 * 1024);
                if work_items == 0 || work_items > max_wg || local_bytes > max_local {
                    crate::bail!(
                        InvalidInput,
                        "GEMM parameters {self:?} do not fit {}: {work_items} work-items (at most {max_wg}), {local_bytes} bytes of local memory (at most {max_local})",
                        device.name
                    );
                }
                Ok(vec![
                    ("USE_LOCAL", "1".into()),
                    ("MWG", mwg.to_string()),
                    ("NWG", nwg.to_string()),
                    ("KWG", kwg.to_string()),
                    ("MWI", mwi.to_string()),
                    ("NWI", nwi.to_string()),
                ])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, vendor: &str, platform: &str, gpu: bool) -> DeviceInfo {
        DeviceInfo {
            id: super::super::device::DeviceId(std::ptr::null_mut()),
            platform: platform.into(),
            vendor: vendor.into(),
            name: name.into(),
            driver_version: "1".into(),
            version: "OpenCL 1.2".into(),
            is_gpu: gpu,
            is_cpu: !gpu,
            compute_units: 36,
            max_work_group: 256,
            global_mem: 8 << 30,
            max_alloc: 2 << 30,
            local_mem: 32 << 10,
            extensions: String::new(),
        }
    }

    #[test]
    fn the_table_goes_name_then_vendor_then_default() {
        let rx580 = device("Ellesmere", "Advanced Micro Devices, Inc.", "AMD Accelerated Parallel Processing", true);
        assert_eq!(table_params(&rx580), (GCN4, "device name"));
        let other_amd = device("gfx900", "AMD", "rusticl", true);
        assert_eq!(table_params(&other_amd), (GCN4, "AMD GPU (GCN)"));
        let pocl = device("pthread-skylake-avx512-AMD EPYC", "AuthenticAMD", "Portable Computing Language", false);
        assert_eq!(table_params(&pocl), (POCL, "PoCL"));
        let intel = device("Intel(R) UHD Graphics", "Intel(R) Corporation", "Intel(R) OpenCL", true);
        assert_eq!(table_params(&intel), (DEFAULT, "default"));
    }

    #[test]
    fn a_tune_file_is_read_back_and_a_stale_or_damaged_one_is_ignored() {
        let dev = device("Ellesmere", "AMD", "x", true);
        let tuned = GemmParams::Local { mwg: 32, nwg: 64, kwg: 16, mwi: 2, nwi: 4 };
        let text = tune_text(&dev, tuned, &["measured on 256x256x256".into()]);
        assert_eq!(parse_tuned(text.as_bytes(), &dev), Ok(tuned));
        assert_eq!(tuned.to_string().parse::<GemmParams>().unwrap(), tuned);
        let newer_driver = DeviceInfo { driver_version: "2".into(), ..dev.clone() };
        assert!(parse_tuned(text.as_bytes(), &newer_driver).unwrap_err().contains("stale"));
        let other = DeviceInfo { name: "Ellesmere XT".into(), ..dev.clone() };
        assert!(parse_tuned(text.as_bytes(), &other).is_err());
        let bare = tune_text(&dev, tuned, &[]);
        for bad in [&bare[..bare.len() / 2], "", "garbage\n", &text.replace("local:32", "local:31")] {
            assert!(parse_tuned(bad.as_bytes(), &dev).is_err(), "{bad:?}");
        }
        assert!(parse_tuned(&[0xff, 0xfe, 0], &dev).is_err());
        let too_big = tune_text(&dev, GemmParams::Local { mwg: 128, nwg: 128, kwg: 32, mwi: 4, nwi: 4 }, &[]);
        assert!(parse_tuned(too_big.as_bytes(), &dev).unwrap_err().contains("work-items"));
    }

    #[test]
    fn gpu_entries_fit_gcn_limits() {
        let rx580 = device("Ellesmere", "AMD", "x", true);
        for p in [GCN4, DEFAULT] {
            p.defines(&rx580).unwrap();
        }
        let too_big = GemmParams::Local { mwg: 128, nwg: 128, kwg: 32, mwi: 4, nwi: 4 };
        assert!(too_big.defines(&rx580).is_err(), "1024 work-items and 33 KB must be refused");
        assert!(parse("local:64,64,16,4,4").is_ok() && parse("registers:8,16").is_err());
    }
}
