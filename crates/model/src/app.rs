//! Applications: what a user invokes. All three forms lower to one [`Program`]:
//! - an OpenWhisk **sequence** becomes a chain of Task states;
//! - an **ASL workflow** is its validated [`Graph`];
//! - an **implicit chain** is its entry function, which calls others through `invoke` at run time.

use crate::Error;
use crate::workflow::Graph;

/// OpenWhisk's limit on actions in a sequence.
pub const SEQUENCE_LEN_MAX: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    Workflow(Graph),
    /// Run this function; it may call others.
    Function(String),
}

/// Which form the user wrote, kept for records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Sequence,
    Workflow,
    Function,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Sequence => "sequence",
            Form::Workflow => "workflow",
            Form::Function => "function",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub name: String,
    pub form: Form,
    pub program: Program,
    /// Run this application speculatively (the default). An invocation can still switch it off.
    pub speculation: bool,
}

impl Application {
    pub fn sequence(name: &str, functions: &[String], is_function: &dyn Fn(&str) -> bool) -> Result<Self, Error> {
        let fail = |message: String| Error::App { app: name.to_string(), message };
        crate::check_name(name).map_err(fail)?;
        if functions.is_empty() {
            return Err(fail("a sequence needs at least one function".into()));
        }
        if functions.len() > SEQUENCE_LEN_MAX {
            return Err(fail(format!("a sequence may have at most {SEQUENCE_LEN_MAX} functions")));
        }
        if let Some(f) = functions.iter().find(|f| !is_function(f)) {
            return Err(fail(format!("sequence names unknown function \"{f}\"")));
        }
        Ok(Application {
            name: name.into(),
            form: Form::Sequence,
            program: Program::Workflow(Graph::sequence(functions)),
            speculation: true,
        })
    }

    pub fn workflow(name: &str, graph: Graph) -> Result<Self, Error> {
        crate::check_name(name).map_err(|message| Error::App { app: name.to_string(), message })?;
        Ok(Application {
            name: name.into(),
            form: Form::Workflow,
            program: Program::Workflow(graph),
            speculation: true,
        })
    }

    pub fn function(name: &str, entry: &str, is_function: &dyn Fn(&str) -> bool) -> Result<Self, Error> {
        let fail = |message: String| Error::App { app: name.to_string(), message };
        crate::check_name(name).map_err(fail)?;
        if !is_function(entry) {
            return Err(fail(format!("entry function \"{entry}\" is unknown")));
        }
        Ok(Application {
            name: name.into(),
            form: Form::Function,
            program: Program::Function(entry.into()),
            speculation: true,
        })
    }
}
