#![allow(missing_docs)]
use super::Loc;
use super::modules::Modules;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Frame {
    pub function: Option<String>,
    pub module: String,
    pub offset: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}
pub fn symbolize(modules: &Modules, locs: &[(Loc, bool)]) -> HashMap<(Loc, bool), Vec<Frame>> {
    locs.iter()
        .map(|&(l, leaf)| {
            (
                (l, leaf),
                vec![Frame {
                    function: None,
                    module: modules.module(l.module).name.clone(),
                    offset: format!("{:#x}", l.offset),
                    file: None,
                    line: None,
                }],
            )
        })
        .collect()
}
