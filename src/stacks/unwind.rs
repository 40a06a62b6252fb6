#![allow(missing_docs)]
use super::Loc;
use super::modules::Modules;
#[derive(Debug, Clone, Copy)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}
#[derive(Debug, Default)]
pub struct Unwinder;
impl Unwinder {
    pub fn new() -> Self {
        Unwinder
    }
    pub fn unwind(
        &mut self,
        modules: &mut Modules,
        pid: i32,
        regs: UserRegs,
        _stack: &[u8],
        out: &mut Vec<(Loc, bool)>,
    ) {
        if let Some(l) = modules.locate(pid, regs.ip) {
            out.push((l, true));
        }
    }
}
