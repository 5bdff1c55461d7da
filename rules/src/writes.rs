//! What a string writes: the tables whose cached reads a commit of it must
//! invalidate. Decided here, once per analysis, for every caller: the
//! proxy's write path and [`crate::decide`] both ask [`Writes::of`].

use crate::analysis::Analysis;
use crate::names::TableRef;
use crate::statement::{push_unique, StatementKind};

/// The tables a string writes, to invalidate after it commits (not at all
/// after a ROLLBACK).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// The relations written, in order of appearance, each once.
    pub tables: Vec<TableRef>,
    /// The string may change results it does not name (`DO`, `CALL`,
    /// `DROP … CASCADE`, `COMMIT PREPARED`…): invalidate everything.
    pub all: bool,
    /// DDL: catalog facts (volatility, row-level security, view bases) may
    /// have changed and must be read again.
    pub ddl: bool,
}

impl Writes {
    /// What `analysis` writes; `None` for a string that only reads.
    pub fn of(analysis: &Analysis) -> Option<Writes> {
        if !analysis.writes() {
            return None;
        }
        let statements = &analysis.statements;
        Some(Writes {
            tables: analysis.tables_written(),
            all: statements.iter().any(|s| s.writes_unknown),
            ddl: statements.iter().any(|s| s.kind == StatementKind::Ddl),
        })
    }

    /// Everything, DDL included: what a string whose writes cannot be
    /// pinned down (see [`crate::decide_unparsable`]) invalidates.
    pub fn everything() -> Writes {
        Writes {
            tables: Vec::new(),
            all: true,
            ddl: true,
        }
    }

    /// Adds `other`'s writes (a transaction's statements, one after another).
    pub fn merge(&mut self, other: Writes) {
        for table in other.tables {
            push_unique(&mut self.tables, table);
        }
        self.all |= other.all;
        self.ddl |= other.ddl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;

    fn writes(sql: &str) -> Option<Writes> {
        Writes::of(&analyze(sql).unwrap())
    }

    #[test]
    fn reads_write_nothing() {
        assert_eq!(writes("SELECT a FROM t WHERE id = 1"), None);
        assert_eq!(writes("SHOW search_path"), None);
    }

    #[test]
    fn dml_names_its_tables_and_ddl_says_so() {
        let w = writes("UPDATE t SET a = 1; DELETE FROM s.u").unwrap();
        let names: Vec<String> = w.tables.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["t", "s.u"]);
        assert!(!w.all && !w.ddl);
        let w = writes("ALTER TABLE t ADD COLUMN b int").unwrap();
        assert!(w.ddl && !w.all);
        let w = writes("DO $$ BEGIN END $$").unwrap();
        assert!(w.all);
    }

    #[test]
    fn merging_keeps_each_table_once_and_widens_the_flags() {
        let mut w = writes("UPDATE t SET a = 1").unwrap();
        w.merge(writes("INSERT INTO t VALUES (1)").unwrap());
        w.merge(writes("CREATE INDEX ON u (a)").unwrap());
        assert_eq!(w.tables.len(), 2);
        assert!(w.ddl && !w.all);
    }
}
