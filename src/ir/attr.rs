//! Node attributes, decoded from ONNX by `onnx::import` into plain Rust values. Op builders read them
//! through typed getters whose errors name the attribute and what was expected.

use super::graph::Graph;
use super::tensor::Tensor;
use crate::{bail, Result};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(Arc<Tensor>),
    Graph(Arc<Graph>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    Tensors(Vec<Arc<Tensor>>),
    Graphs(Vec<Arc<Graph>>),
    /// A type attribute (e.g. on Optional); only its ONNX elem type code is kept.
    Type(Option<i32>),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "a float",
            Attr::Int(_) => "an int",
            Attr::String(_) => "a string",
            Attr::Tensor(_) => "a tensor",
            Attr::Graph(_) => "a graph",
            Attr::Floats(_) => "a list of floats",
            Attr::Ints(_) => "a list of ints",
            Attr::Strings(_) => "a list of strings",
            Attr::Tensors(_) => "a list of tensors",
            Attr::Graphs(_) => "a list of graphs",
            Attr::Type(_) => "a type",
        }
    }
}

/// A node's attributes by name, in file order.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    items: Vec<(String, Attr)>,
}

macro_rules! getter {
    ($(#[$doc:meta])* $name:ident, $or:ident, $variant:ident, $t:ty, $kind:literal) => {
        $(#[$doc])*
        pub fn $name(&self, name: &str) -> Result<Option<$t>> {
            match self.get(name) {
                None => Ok(None),
                Some(Attr::$variant(v)) => Ok(Some(v.clone())),
                Some(other) => bail!(InvalidModel, "attribute '{name}' should be {}, found {}", $kind, other.kind()),
            }
        }
        pub fn $or(&self, name: &str, default: $t) -> Result<$t> {
            Ok(self.$name(name)?.unwrap_or(default))
        }
    };
}

impl Attributes {
    pub fn new(items: Vec<(String, Attr)>) -> Attributes {
        Attributes { items }
    }

    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.items.iter().map(|(n, a)| (n.as_str(), a))
    }

    getter!(int, int_or, Int, i64, "an int");
    getter!(float, float_or, Float, f32, "a float");
    getter!(string, string_or, String, String, "a string");
    getter!(ints, ints_or, Ints, Vec<i64>, "a list of ints");
    getter!(floats, floats_or, Floats, Vec<f32>, "a list of floats");
    getter!(strings, strings_or, Strings, Vec<String>, "a list of strings");
    getter!(tensor, tensor_or, Tensor, Arc<Tensor>, "a tensor");
    getter!(graph, graph_or, Graph, Arc<Graph>, "a graph");

    /// An attribute that must be present.
    pub fn required<T>(&self, name: &str, v: Result<Option<T>>) -> Result<T> {
        match v? {
            Some(v) => Ok(v),
            None => bail!(InvalidModel, "required attribute '{name}' is missing"),
        }
    }

    pub fn req_int(&self, name: &str) -> Result<i64> {
        self.required(name, self.int(name))
    }

    pub fn req_graph(&self, name: &str) -> Result<Arc<Graph>> {
        self.required(name, self.graph(name))
    }
}
