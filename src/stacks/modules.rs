#![allow(missing_docs)]
use super::{Loc, ModuleId};
use std::collections::HashMap;
#[derive(Debug, Clone)]
pub struct Module {
    pub path: String,
    pub name: String,
}
#[derive(Debug, Default)]
pub struct Modules {
    mods: Vec<Module>,
    maps: HashMap<i32, Vec<(u64, u64, u64, ModuleId)>>,
}
impl Modules {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn read_process(&mut self, pid: i32) -> std::io::Result<()> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        let mut v = Vec::new();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') {
                continue;
            }
            let (a, b) = f[0].split_once('-').unwrap();
            let a = u64::from_str_radix(a, 16).unwrap();
            let b = u64::from_str_radix(b, 16).unwrap();
            let off = u64::from_str_radix(f[2], 16).unwrap();
            let path = f[5].to_string();
            let id = match self.mods.iter().position(|m| m.path == path) {
                Some(i) => ModuleId(i as u32),
                None => {
                    self.mods.push(Module {
                        name: path.rsplit('/').next().unwrap().to_string(),
                        path,
                    });
                    ModuleId(self.mods.len() as u32 - 1)
                }
            };
            v.push((a, b, off, id));
        }
        self.maps.insert(pid, v);
        Ok(())
    }
    pub fn inherit(&mut self, parent: i32, child: i32) {
        if let Some(m) = self.maps.get(&parent).cloned() {
            self.maps.insert(child, m);
        }
    }
    pub fn locate(&self, pid: i32, addr: u64) -> Option<Loc> {
        self.maps
            .get(&pid)?
            .iter()
            .find(|m| m.0 <= addr && addr < m.1)
            .map(|m| Loc {
                module: m.3,
                offset: addr - m.0 + m.2,
            })
    }
    pub fn module(&self, id: ModuleId) -> &Module {
        &self.mods[id.0 as usize]
    }
    pub fn forget_process(&mut self, pid: i32) {
        self.maps.remove(&pid);
    }
}
