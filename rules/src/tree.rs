//! A generic, typed view of a `pg_query` parse tree.
//!
//! `pg_query` hands back ~270 protobuf node types. The questions pgstash asks
//! ("which functions are called?", "which relations are read?") must be
//! answered for *every* place a node can appear, or a volatile function hidden
//! in an unusual clause would make a statement look cacheable. Hand-walking
//! every node type is long and silently incomplete when Postgres adds syntax,
//! so instead this module converts the tree, through the `serde::Serialize`
//! implementations the protobuf types derive, into a small generic tree in
//! which every struct keeps its type name. Walkers then match on the few type
//! names they care about and recurse into everything else: completeness comes
//! by construction.
//!
//! `Node` wrappers (`Node { node: Option<NodeEnum> }`) and one-of enums are
//! collapsed, so a child is directly the struct it wraps.
//!
//! # Performance
//! One allocation per parse node. The conversion runs once per query shape
//! (analyses are cached by fingerprint), never per execution.

use serde::ser::{self, Serialize};
use thiserror::Error;

/// Deeper trees are refused rather than risking the stack of the calling task.
const MAX_DEPTH: usize = 2_000;

/// Why a parse tree could not be converted.
#[derive(Debug, Error)]
pub enum TreeError {
    /// The tree nests deeper than [`MAX_DEPTH`].
    #[error("parse tree nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A value serde could not represent (never expected from `pg_query` types).
    #[error("unsupported parse tree value: {0}")]
    Unsupported(String),
}

impl ser::Error for TreeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TreeError::Unsupported(msg.to_string())
    }
}

/// A value in the generic tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Node(Box<Node>),
}

/// A parse node: its protobuf type name (e.g. `"FuncCall"`) and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub ty: &'static str,
    pub fields: Vec<(&'static str, Value)>,
}

impl Value {
    pub fn as_node(&self) -> Option<&Node> {
        match self {
            Value::Node(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Calls `f` on every node in this value, depth first, parents before children.
    pub fn for_each_node<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        match self {
            Value::Node(n) => n.for_each_node(f),
            Value::List(items) => items.iter().for_each(|v| v.for_each_node(f)),
            _ => {}
        }
    }
}

impl Node {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, v)| v)
    }

    /// The string field `field`, or `""` when absent (protobuf's "unset").
    pub fn str(&self, field: &str) -> &str {
        self.get(field).and_then(Value::as_str).unwrap_or("")
    }

    /// The integer (or protobuf enum) field `field`, or 0 when absent.
    pub fn int(&self, field: &str) -> i64 {
        match self.get(field) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        }
    }

    pub fn bool(&self, field: &str) -> bool {
        matches!(self.get(field), Some(Value::Bool(true)))
    }

    pub fn node(&self, field: &str) -> Option<&Node> {
        self.get(field).and_then(Value::as_node)
    }

    /// The list field `field`, or an empty slice when absent.
    pub fn list(&self, field: &str) -> &[Value] {
        match self.get(field) {
            Some(Value::List(items)) => items,
            _ => &[],
        }
    }

    /// The nodes of list field `field`.
    pub fn nodes<'a>(&'a self, field: &str) -> impl Iterator<Item = &'a Node> + 'a {
        self.list(field).iter().filter_map(Value::as_node)
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn for_each_node<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        f(self);
        for (_, v) in &self.fields {
            v.for_each_node(f);
        }
    }

    /// The `sval`s of a list of `String` nodes, e.g. a `FuncCall.funcname`.
    pub fn names(&self, field: &str) -> Vec<&str> {
        self.nodes(field)
            .filter(|n| n.ty == "String")
            .map(|n| n.str("sval"))
            .collect()
    }
}

/// Converts any `pg_query` protobuf value into the generic tree.
pub fn to_tree<T: Serialize + ?Sized>(value: &T) -> Result<Value, TreeError> {
    value.serialize(Converter { depth: 0 })
}

/// The serde serializer that builds [`Value`]s.
struct Converter {
    depth: usize,
}

impl Converter {
    fn child(&self) -> Result<Converter, TreeError> {
        if self.depth >= MAX_DEPTH {
            return Err(TreeError::TooDeep);
        }
        Ok(Converter {
            depth: self.depth + 1,
        })
    }
}

/// Collects the elements of a sequence, tuple or map.
struct ListBuilder {
    depth: usize,
    items: Vec<Value>,
}

/// Collects the fields of a struct.
struct NodeBuilder {
    depth: usize,
    node: Node,
}

impl NodeBuilder {
    fn finish(self) -> Value {
        // `Node { node: Option<NodeEnum> }` wrappers are transparent.
        if self.node.ty == "Node" && self.node.fields.len() == 1 {
            if let Some((_, v)) = self.node.fields.into_iter().next() {
                return v;
            }
            return Value::Null;
        }
        Value::Node(Box::new(self.node))
    }
}

impl ser::Serializer for Converter {
    type Ok = Value;
    type Error = TreeError;
    type SerializeSeq = ListBuilder;
    type SerializeTuple = ListBuilder;
    type SerializeTupleStruct = ListBuilder;
    type SerializeTupleVariant = ListBuilder;
    type SerializeMap = ListBuilder;
    type SerializeStruct = NodeBuilder;
    type SerializeStructVariant = NodeBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, TreeError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, TreeError> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, TreeError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, TreeError> {
        Ok(Value::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, TreeError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, TreeError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, TreeError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, TreeError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, TreeError> {
        Ok(Value::List(
            v.iter().map(|b| Value::Int(i64::from(*b))).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, TreeError> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, TreeError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, TreeError> {
        value.serialize(self)
    }
    /// One-of enums (`NodeEnum::FuncCall(FuncCall)`) collapse to their payload,
    /// which carries its own type name.
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<Value, TreeError> {
        value.serialize(self.child()?)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<ListBuilder, TreeError> {
        Ok(ListBuilder {
            depth: self.child()?.depth,
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<ListBuilder, TreeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<ListBuilder, TreeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<ListBuilder, TreeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<ListBuilder, TreeError> {
        self.serialize_seq(len)
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<NodeBuilder, TreeError> {
        Ok(NodeBuilder {
            depth: self.child()?.depth,
            node: Node {
                ty: name,
                fields: Vec::with_capacity(len),
            },
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<NodeBuilder, TreeError> {
        self.serialize_struct(variant, len)
    }
}

impl ListBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        let v = value.serialize(Converter { depth: self.depth })?;
        self.items.push(v);
        Ok(())
    }
}

impl ser::SerializeSeq for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.items))
    }
}

impl ser::SerializeTuple for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.items))
    }
}

impl ser::SerializeTupleStruct for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.items))
    }
}

impl ser::SerializeTupleVariant for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.items))
    }
}

impl ser::SerializeMap for ListBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), TreeError> {
        self.push(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(Value::List(self.items))
    }
}

impl ser::SerializeStruct for NodeBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        let v = value.serialize(Converter { depth: self.depth })?;
        self.node.fields.push((key, v));
        Ok(())
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for NodeBuilder {
    type Ok = Value;
    type Error = TreeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), TreeError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<Value, TreeError> {
        Ok(self.finish())
    }
}

/// Parses `sql` and converts each top-level statement into a generic tree.
pub fn parse_statements(sql: &str) -> Result<Vec<Value>, ParseError> {
    let parsed =
        pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).map_err(ParseError::Parse)?;
    parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| match &raw.stmt {
            Some(stmt) => to_tree(stmt.as_ref()).map_err(ParseError::Tree),
            None => Ok(Value::Null),
        })
        .collect()
}

/// Why [`parse_statements`] failed.
#[derive(Debug, Error)]
pub enum ParseError {
    /// Postgres' parser rejected the text.
    #[error("{0}")]
    Parse(#[source] pg_query::Error),
    /// The parse tree could not be converted.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(sql: &str) -> Node {
        let stmts = parse_statements(sql).unwrap();
        stmts[0].as_node().unwrap().clone()
    }

    #[test]
    fn node_wrappers_and_one_ofs_collapse_to_typed_nodes() {
        let select = first("select f(1) from t");
        assert_eq!(select.ty, "SelectStmt");
        let target = select.nodes("target_list").next().unwrap();
        assert_eq!(target.ty, "ResTarget");
        let call = target.node("val").unwrap();
        assert_eq!(call.ty, "FuncCall");
        assert_eq!(call.names("funcname"), vec!["f"]);
        let konst = call.nodes("args").next().unwrap();
        assert_eq!(konst.ty, "AConst");
        assert_eq!(konst.node("val").unwrap().int("ival"), 1);
        let from = select.nodes("from_clause").next().unwrap();
        assert_eq!((from.ty, from.str("relname")), ("RangeVar", "t"));
    }

    #[test]
    fn for_each_node_reaches_nested_nodes() {
        let select = first("select case when x then g(now()) end from t");
        let mut calls = Vec::new();
        select.for_each_node(&mut |n| {
            if n.ty == "FuncCall" {
                calls.push(n.names("funcname").join("."));
            }
        });
        assert_eq!(calls, vec!["g", "now"]);
    }

    #[test]
    fn unparsable_text_is_an_error() {
        assert!(parse_statements("selec 1").is_err());
    }
}
