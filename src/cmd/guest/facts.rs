//! `system.json`: the facts about the machine the results came from.

use std::path::Path;

use serde_json::{Value, json};

use crate::doc::{SCHEMA_VERSION, Tool};

/// Facts about the machine the results came from, written as `system.json` (the same keys
/// `scripts/collect.sh` writes on the host): the usual envelope plus uname, THP settings
/// (including the per-size mTHP switches of 6.8+, as `sizes: [{size_kb, enabled}]`), cpu, memory, privileges and whether
/// soft-dirty tracking works.
pub fn system_facts(collected_by: &str) -> Value {
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let thp_dir = "/sys/kernel/mm/transparent_hugepage";
    let mut sizes = Vec::new();
    if let Ok(rd) = std::fs::read_dir(thp_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(kb) = name
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                // Sizes without an `enabled` switch (shmem-only ones) are not anonymous THP sizes.
                if let Some(mode) =
                    crate::kernel::read_selected(&format!("{thp_dir}/{name}/enabled"))
                {
                    sizes.push((kb, mode));
                }
            }
        }
    }
    sizes.sort();
    let sizes: Vec<Value> = sizes
        .into_iter()
        .map(|(kb, mode)| json!({ "size_kb": kb, "enabled": mode }))
        .collect();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    json!({
        "schema_version": SCHEMA_VERSION,
        "tool": Tool::current(),
        "system": crate::mem::system::detect(),
        "collected_by": collected_by,
        "uname": {
            "sysname": field(|u| u.sysname()),
            "release": field(|u| u.release()),
            "version": field(|u| u.version()),
            "machine": field(|u| u.machine()),
        },
        "thp": {
            "enabled": crate::kernel::read_selected(&format!("{thp_dir}/enabled")),
            "defrag": crate::kernel::read_selected(&format!("{thp_dir}/defrag")),
            "shmem_enabled": crate::kernel::read_selected(&format!("{thp_dir}/shmem_enabled")),
            "hpage_pmd_size_kb": crate::kernel::thp_pmd_size_kb(),
            "sizes": sizes,
        },
        "cpu": { "model": cpu_model, "count": cpus },
        "memory": { "mem_total_kb": crate::kernel::meminfo_kb("MemTotal") },
        "privileges": {
            "uid": nix::unistd::getuid().as_raw(),
            "euid": nix::unistd::geteuid().as_raw(),
            "cap_eff": status.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|s| s.trim().to_string()),
        },
        "soft_dirty": crate::mem::system::soft_dirty_probe(),
        "ksm": Path::new("/sys/kernel/mm/ksm/run").exists(),
    })
}
