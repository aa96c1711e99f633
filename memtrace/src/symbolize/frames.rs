//! Symbolized frames.

use std::{fmt, sync::Arc};

use blazesym::symbolize::Sym;

/// A file code is mapped from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Module {
    /// As the process sees it.
    pub path: String,
    /// GNU build id in hex, when the file has one.
    pub build_id: Option<String>,
    /// Without a build id, what the file is known by instead (see
    /// `library::file_identity`).
    pub identity: Option<String>,
    /// memtrace could open the file (a file gone with its process, or
    /// never reachable, cannot be read for names).
    pub readable: bool,
}

impl Module {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// What the library knows the file by: its build id, else its identity.
    pub fn key(&self) -> Option<&str> {
        self.build_id.as_deref().or(self.identity.as_deref())
    }
}

/// A function at a frame, with its source position when debug info has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One frame of a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The address looked up (for return addresses, the call instruction).
    pub address: u64,
    /// Offset in the module's file.
    pub file_offset: u64,
    pub module: Option<Arc<Module>>,
    /// Innermost first: inlined functions, then the function the code
    /// belongs to. Empty when the module has no symbols (stripped).
    pub functions: Vec<Function>,
}

impl Frame {
    pub fn unknown(address: u64) -> Self {
        Self {
            address,
            file_offset: 0,
            module: None,
            functions: Vec::new(),
        }
    }

    /// Code in anonymous memory (JIT, trampolines), named after its mapping
    /// and the offset in it (`[anonymous]+0x1a40`), so that distinct
    /// functions stay apart.
    pub fn in_anonymous(address: u64, mapping_start: u64, mapping: String) -> Self {
        Self {
            address,
            file_offset: address - mapping_start,
            module: Some(Arc::new(Module {
                path: if mapping.starts_with('[') {
                    mapping
                } else {
                    format!("[{mapping}]")
                },
                build_id: None,
                identity: None,
                readable: false,
            })),
            functions: Vec::new(),
        }
    }

    /// JIT-compiled code in an anonymous mapping, named by the runtime's
    /// perf map.
    pub fn jit(address: u64, mapping_start: u64, mapping: String, name: String) -> Self {
        Self {
            functions: vec![Function {
                name,
                file: None,
                line: None,
            }],
            ..Self::in_anonymous(address, mapping_start, mapping)
        }
    }

    /// Code in an anonymous mapping with no name: JIT code whose runtime
    /// wrote no perf map.
    pub fn is_unnamed_jit(&self) -> bool {
        self.functions.is_empty()
            && self
                .module
                .as_ref()
                .is_some_and(|module| module.path.starts_with('['))
    }

    /// The names this frame stands for, innermost first: inlined functions
    /// each get their own, like separate frames; code without symbols is
    /// `module+0xoffset`.
    pub fn names(&self) -> Vec<String> {
        if self.functions.is_empty() {
            return vec![self.to_string()];
        }
        self.functions
            .iter()
            .map(|function| function.name.clone())
            .collect()
    }

    /// The function the code belongs to (not an inlined one).
    pub fn outermost_function(&self) -> Option<&str> {
        self.functions.last().map(|function| function.name.as_str())
    }
}

impl fmt::Display for Frame {
    /// `function`, or for code without symbols `module+0xoffset`, never
    /// nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(function) = self.functions.first() {
            return f.write_str(&function.name);
        }
        match &self.module {
            Some(module) => write!(f, "{}+{:#x}", module.name(), self.file_offset),
            None => write!(f, "{:#x}", self.address),
        }
    }
}

/// blazesym's symbol as our functions, innermost first.
pub(super) fn functions(sym: &Sym<'_>) -> Vec<Function> {
    let position = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        info.map(|info| (info.to_path().display().to_string(), info.line))
    };
    let mut functions: Vec<Function> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| {
            let (file, line) = position(inlined.code_info.as_ref()).unzip();
            Function {
                name: inlined.name.to_string(),
                file,
                line: line.flatten(),
            }
        })
        .collect();
    let (file, line) = position(sym.code_info.as_deref()).unzip();
    functions.push(Function {
        name: sym.name.to_string(),
        file,
        line: line.flatten(),
    });
    functions
}
