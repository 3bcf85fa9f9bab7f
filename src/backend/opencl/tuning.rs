//! Kernel parameters per device: a table searched by device name, then by vendor/architecture,
//! then a default (CLBlast's database, ggml's fa_tune.h). `CRX580_GEMM_PARAMS` overrides the
//! table (benchmark sweeps): `registers:MWI,VW,NV` or `local:MWG,NWG,KWG,MWI,NWI`.

use super::device::DeviceInfo;
use crate::Result;

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
/// (pocl.md: local memory is ordinary RAM there and barriers only cost).
const POCL: GemmParams = GemmParams::Registers { mwi: 8, vw: 16, nv: 2 };

/// Anything else: a modest local-memory tiling every OpenCL 1.2 GPU runs (256 work-items, 8 KB).
const DEFAULT: GemmParams = GemmParams::Local { mwg: 32, nwg: 32, kwg: 16, mwi: 2, nwi: 2 };

/// Device-name entries: a substring of the device name and its parameters.
const BY_NAME: &[(&str, GemmParams)] =
    &[("Ellesmere", GCN4), ("gfx803", GCN4), ("Radeon RX 580", GCN4), ("Polaris", GCN4)];

/// The GEMM parameters for `device` and which entry gave them.
pub fn gemm_params(device: &DeviceInfo) -> Result<(GemmParams, &'static str)> {
    if let Ok(text) = std::env::var("CRX580_GEMM_PARAMS") {
        return Ok((parse(&text)?, "CRX580_GEMM_PARAMS"));
    }
    if let Some((_, p)) = BY_NAME.iter().find(|(name, _)| device.name.contains(name)) {
        return Ok((*p, "device name"));
    }
    let vendor = device.vendor.to_ascii_lowercase();
    if device.is_gpu && (vendor.contains("advanced micro devices") || vendor.starts_with("amd")) {
        return Ok((GCN4, "AMD GPU (GCN)"));
    }
    if device.platform.contains("Portable Computing Language")
        || device.name.starts_with("pthread-")
        || device.name.starts_with("cpu-")
    {
        return Ok((POCL, "PoCL"));
    }
    Ok((DEFAULT, "default"))
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
        assert_eq!(gemm_params(&rx580).unwrap(), (GCN4, "device name"));
        let other_amd = device("gfx900", "AMD", "rusticl", true);
        assert_eq!(gemm_params(&other_amd).unwrap(), (GCN4, "AMD GPU (GCN)"));
        let pocl = device("pthread-skylake-avx512-AMD EPYC", "AuthenticAMD", "Portable Computing Language", false);
        assert_eq!(gemm_params(&pocl).unwrap(), (POCL, "PoCL"));
        let intel = device("Intel(R) UHD Graphics", "Intel(R) Corporation", "Intel(R) OpenCL", true);
        assert_eq!(gemm_params(&intel).unwrap(), (DEFAULT, "default"));
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
