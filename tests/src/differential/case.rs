//! A differential test case: frontend messages to send and where to stop
//! reading, written as data so it replays identically on two servers.

use crate::wire::Frontend;

/// One step of a case.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these messages in one go (a pipeline when there are several).
    Send(Vec<Frontend>),
    /// Read until this many ReadyForQuery have arrived.
    ReadyForQuery(usize),
    /// Read until a message of this type (e.g. `b'G'` CopyInResponse).
    Until(u8),
}

/// A named sequence of steps. Every case ends with the connection idle
/// (outside a transaction), so cases can share a connection.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub steps: Vec<Step>,
}

impl Case {
    pub fn new(name: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// A case that sends one simple Query and reads its answer.
    pub fn simple(name: impl Into<String>, sql: &str) -> Case {
        Case::new(name).query(sql)
    }

    /// Appends a simple Query and reading up to its ReadyForQuery.
    pub fn query(self, sql: &str) -> Case {
        self.send([Frontend::query(sql)]).ready(1)
    }

    /// Appends sending `msgs` in one write.
    pub fn send(mut self, msgs: impl IntoIterator<Item = Frontend>) -> Case {
        self.steps.push(Step::Send(msgs.into_iter().collect()));
        self
    }

    /// Appends reading up to `n` ReadyForQuery.
    pub fn ready(mut self, n: usize) -> Case {
        self.steps.push(Step::ReadyForQuery(n));
        self
    }

    /// Appends reading up to a message of type `tag`.
    pub fn until(mut self, tag: u8) -> Case {
        self.steps.push(Step::Until(tag));
        self
    }

    /// Appends one unnamed-statement round trip: Parse, Bind (text
    /// parameters, `format` for all result columns), Describe portal,
    /// Execute, Sync.
    pub fn extended(self, sql: &str, params: &[Option<&str>], format: i16) -> Case {
        self.send(extended(sql, params, format)).ready(1)
    }
}

/// Parse/Bind/Describe/Execute/Sync of an unnamed statement.
pub fn extended(sql: &str, params: &[Option<&str>], format: i16) -> Vec<Frontend> {
    vec![
        Frontend::parse("", sql, &[]),
        Frontend::bind("", "", params, format),
        Frontend::describe_portal(""),
        Frontend::execute("", 0),
        Frontend::Sync,
    ]
}
