//! Import of an ONNX ModelProto into the graph IR: values by name, initializers as constants,
//! declared types as facts, attributes as [`Attr`]s, subgraphs (with the outer values they capture),
//! and each node's op from the registry. Problems with unsupported operators are collected across
//! the whole model and reported together.

use super::model::{attr_type, decode_model, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto};
use super::model::{TypeProto, ValueInfoProto};
use super::tensor::tensor_from_proto;
use crate::error::ResultExt;
use crate::ir::{Attr, Attributes, DType, Dim, Fact, Graph, Node, ValueId, ValueKind};
use crate::ops::{subgraph_captures, BuildCtx, Registry};
use crate::{bail, err, ErrorKind, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// A model as imported: its graph plus the metadata `crx580 info` shows.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    pub graph: Graph,
    pub ir_version: i64,
    /// (domain, version) pairs; "" is the default ONNX domain.
    pub opsets: Vec<(String, i64)>,
    pub producer: String,
}

/// Decodes and imports a model. `base_dir` is where external data files are looked up.
pub fn import_model(bytes: &[u8], base_dir: Option<&Path>) -> Result<ImportedModel> {
    import_with_registry(bytes, base_dir, crate::ops::registry())
}

fn import_with_registry(bytes: &[u8], base_dir: Option<&Path>, registry: &Registry) -> Result<ImportedModel> {
    let model = decode_model(bytes)?;
    let opsets = opsets_of(&model);
    let Some(graph_proto) = &model.graph else {
        bail!(InvalidModel, "the model has no graph");
    };
    let functions: HashSet<(String, String)> =
        model.functions.iter().map(|f| (normalize_domain(&f.domain).to_string(), f.name.clone())).collect();
    let mut ctx = Ctx { registry, opsets: &opsets, functions: &functions, base_dir, problems: Problems::default() };
    let graph = import_graph(graph_proto, None, &mut ctx)?;
    ctx.problems.into_result()?;
    let producer = format!("{} {}", model.producer_name, model.producer_version).trim().to_string();
    Ok(ImportedModel { graph, ir_version: model.ir_version, opsets, producer })
}

/// "" and "ai.onnx" name the same default domain.
fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

/// The model's opset per domain. Files before IR version 3 had no opset imports and meant opset 1.
fn opsets_of(model: &ModelProto) -> Vec<(String, i64)> {
    let mut opsets: Vec<(String, i64)> = vec![];
    for o in &model.opset_import {
        let domain = normalize_domain(&o.domain);
        match opsets.iter_mut().find(|(d, _)| d == domain) {
            // A domain imported twice: the newer version is the one the nodes were written for.
            Some(entry) => entry.1 = entry.1.max(o.version),
            None => opsets.push((domain.to_string(), o.version)),
        }
    }
    if opsets.is_empty() && model.ir_version < 3 {
        opsets.push((String::new(), 1));
    }
    opsets
}

/// Unsupported operators and settings, gathered over the whole model so that one error lists them all.
#[derive(Default)]
struct Problems {
    missing_ops: Vec<String>,
    other: Vec<String>,
}

impl Problems {
    fn missing(&mut self, item: String) {
        if !self.missing_ops.contains(&item) {
            self.missing_ops.push(item);
        }
    }

    fn other(&mut self, item: String) {
        if !self.other.contains(&item) {
            self.other.push(item);
        }
    }

    fn into_result(self) -> Result<()> {
        let mut parts = vec![];
        if !self.missing_ops.is_empty() {
            parts.push(format!("unsupported operators: {}", self.missing_ops.join(", ")));
        }
        parts.extend(self.other);
        if parts.is_empty() {
            Ok(())
        } else {
            bail!(Unsupported, "{}", parts.join("; "))
        }
    }
}

struct Ctx<'m> {
    registry: &'m Registry,
    opsets: &'m [(String, i64)],
    /// Model-local functions by (domain, name), to explain why their uses are not supported.
    functions: &'m HashSet<(String, String)>,
    base_dir: Option<&'m Path>,
    problems: Problems,
}

/// The names visible to a subgraph: those of every enclosing graph, innermost first.
struct Scope<'s> {
    graph: &'s Graph,
    names: &'s HashMap<String, ValueId>,
    parent: Option<&'s Scope<'s>>,
}

impl Scope<'_> {
    fn lookup(&self, name: &str) -> Option<(ValueKind, Fact)> {
        match self.names.get(name) {
            Some(&id) => Some((self.graph.values[id].kind.clone(), self.graph.values[id].fact.clone())),
            None => self.parent?.lookup(name),
        }
    }
}

/// A graph under construction, with its values by name.
struct Builder<'p> {
    graph: Graph,
    names: HashMap<String, ValueId>,
    parent: Option<&'p Scope<'p>>,
}

impl Builder<'_> {
    fn define(&mut self, name: &str, fact: Fact) -> ValueId {
        let id = self.graph.add_value(name, fact);
        if !name.is_empty() {
            self.names.insert(name.to_string(), id);
        }
        id
    }

    /// The value a name refers to: a local one, or one of an enclosing graph, which this graph
    /// then captures.
    fn resolve(&mut self, name: &str) -> Option<ValueId> {
        if let Some(&id) = self.names.get(name) {
            return Some(id);
        }
        let (kind, fact) = self.parent?.lookup(name)?;
        let id = self.define(name, fact);
        self.graph.values[id].kind = kind;
        self.graph.captures.push(id);
        Some(id)
    }
}

fn describe_node(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("node #{index} ({})", node.op_type)
    } else {
        format!("node '{}' ({})", node.name, node.op_type)
    }
}

fn import_graph(proto: &GraphProto, parent: Option<&Scope>, ctx: &mut Ctx) -> Result<Graph> {
    let mut b =
        Builder { graph: Graph { name: proto.name.clone(), ..Graph::default() }, names: HashMap::new(), parent };

    // Declared types of intermediate values; a graph output's own declaration wins.
    let mut declared: HashMap<&str, &ValueInfoProto> = HashMap::new();
    for vi in proto.value_info.iter().chain(&proto.output) {
        declared.insert(vi.name.as_str(), vi);
    }

    for (i, t) in proto.initializer.iter().enumerate() {
        if t.name.is_empty() {
            bail!(InvalidModel, "initializer #{i} has no name");
        }
        if b.names.contains_key(&t.name) {
            bail!(InvalidModel, "initializer '{}' is defined twice", t.name);
        }
        let tensor = tensor_from_proto(t, ctx.base_dir)?;
        b.define(&t.name, Fact::constant(Arc::new(tensor)));
    }
    let sparse_names: HashSet<&str> =
        proto.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|v| v.name.as_str()).collect();

    let mut input_names = HashSet::new();
    for vi in &proto.input {
        if !input_names.insert(vi.name.as_str()) {
            bail!(InvalidModel, "graph input '{}' is declared twice", vi.name);
        }
        // Before IR version 4 every initializer was also listed as an input; it stays a constant.
        if b.names.contains_key(&vi.name) || sparse_names.contains(vi.name.as_str()) {
            continue;
        }
        if vi.name.is_empty() {
            bail!(InvalidModel, "a graph input has no name");
        }
        let (kind, fact) = fact_of(vi).context(|| format!("graph input '{}'", vi.name))?;
        let id = b.define(&vi.name, fact);
        b.graph.values[id].kind = kind;
        b.graph.inputs.push(id);
    }

    // Every node's outputs exist before any node is wired: files may list nodes in any order.
    let mut outputs_of: Vec<Vec<ValueId>> = Vec::with_capacity(proto.node.len());
    for (k, node) in proto.node.iter().enumerate() {
        let mut ids = Vec::with_capacity(node.output.len());
        for name in &node.output {
            if !name.is_empty() && b.names.contains_key(name) {
                bail!(InvalidModel, "value '{name}' is produced twice (again by {})", describe_node(node, k));
            }
            let (kind, fact) = match declared.get(name.as_str()) {
                Some(vi) => fact_of(vi).context(|| format!("value '{name}'"))?,
                None => (ValueKind::Tensor, Fact::unknown()),
            };
            let id = b.define(name, fact);
            b.graph.values[id].kind = kind;
            ids.push(id);
        }
        outputs_of.push(ids);
    }

    for ((k, node), outputs) in proto.node.iter().enumerate().zip(outputs_of) {
        import_node(&mut b, node, k, outputs, &sparse_names, ctx)?;
    }

    for vi in &proto.output {
        let Some(id) = b.resolve(&vi.name) else {
            bail!(InvalidModel, "graph output '{}' is not produced by any node, input or initializer", vi.name);
        };
        b.graph.outputs.push(id);
    }
    b.graph.sort_nodes().context(|| {
        if proto.name.is_empty() {
            "graph".to_string()
        } else {
            format!("graph '{}'", proto.name)
        }
    })?;
    Ok(b.graph)
}

fn import_node(
    b: &mut Builder,
    node: &NodeProto,
    index: usize,
    outputs: Vec<ValueId>,
    sparse_names: &HashSet<&str>,
    ctx: &mut Ctx,
) -> Result<()> {
    let place = describe_node(node, index);
    let attrs = {
        let scope = Scope { graph: &b.graph, names: &b.names, parent: b.parent };
        convert_attributes(node, &scope, ctx).context(|| place.clone())?
    };
    let mut inputs = Vec::with_capacity(node.input.len());
    for name in &node.input {
        if name.is_empty() {
            inputs.push(None);
            continue;
        }
        match b.resolve(name) {
            Some(id) => inputs.push(Some(id)),
            None if sparse_names.contains(name.as_str()) => {
                bail!(Unsupported, "{place}: input '{name}' is a sparse initializer, which is not supported")
            }
            None => bail!(InvalidModel, "{place}: input '{name}' is not produced by any node, input or initializer"),
        }
    }
    // What the subgraphs capture becomes trailing inputs (the convention of `ops::Op`), resolved
    // here so that a value captured from further out is captured by this graph in turn.
    for name in subgraph_captures(&attrs) {
        match b.resolve(&name) {
            Some(id) => inputs.push(Some(id)),
            None => bail!(InvalidModel, "{place}: a subgraph uses '{name}', which no enclosing graph defines"),
        }
    }

    let domain = normalize_domain(&node.domain);
    let Some(&(_, opset)) = ctx.opsets.iter().find(|(d, _)| d == domain) else {
        bail!(InvalidModel, "{place}: the model imports no opset for domain '{}'", node.domain);
    };
    let Some(build) = ctx.registry.get(domain, &node.op_type) else {
        let qualified = if domain.is_empty() { node.op_type.clone() } else { format!("{domain}:{}", node.op_type) };
        let local_function = ctx.functions.contains(&(domain.to_string(), node.op_type.clone()));
        let note = if local_function { ", a model-local function" } else { "" };
        ctx.problems.missing(format!("{qualified} (opset {opset}{note})"));
        return Ok(());
    };
    let build_ctx = BuildCtx {
        op_type: &node.op_type,
        domain,
        opset,
        attrs: &attrs,
        num_inputs: node.input.len(),
        num_outputs: node.output.len(),
    };
    match build(&build_ctx) {
        Ok(op) => {
            b.graph.nodes.push(Node {
                name: node.name.clone(),
                domain: domain.to_string(),
                op_type: node.op_type.clone(),
                attrs,
                op: Arc::from(op),
                inputs,
                outputs,
            });
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::Unsupported => {
            ctx.problems.other(format!("{place}: {e}"));
            Ok(())
        }
        Err(e) => Err(e.context(place)),
    }
}

/// A declared type as a kind and a fact. For sequences and optionals the fact describes the
/// tensors they hold. Other non-tensor types (maps, sparse tensors) say nothing the IR can use;
/// element types the IR lacks leave the dtype unknown for the op to reject.
fn fact_of(vi: &ValueInfoProto) -> Result<(ValueKind, Fact)> {
    match &vi.r#type {
        Some(t) => declared_type(t),
        None => Ok((ValueKind::Tensor, Fact::unknown())),
    }
}

fn declared_type(t: &TypeProto) -> Result<(ValueKind, Fact)> {
    let tt = match t {
        TypeProto::Tensor(tt) => tt,
        TypeProto::Sequence(elem) => {
            let fact = match elem.as_deref().map(declared_type).transpose()? {
                Some((ValueKind::Tensor, f)) => Fact { dtype: f.dtype, shape: None, value: None },
                _ => Fact::unknown(),
            };
            return Ok((ValueKind::Sequence, fact));
        }
        TypeProto::Optional(Some(elem)) => {
            let (kind, fact) = declared_type(elem)?;
            return Ok((ValueKind::Optional(Box::new(kind)), fact));
        }
        _ => return Ok((ValueKind::Tensor, Fact::unknown())),
    };
    let shape = tt.shape.as_ref().map(|dims| {
        dims.iter()
            .map(|d| match d {
                // paddle2onnx and others write -1 for a dynamic dim; onnxruntime reads any negative
                // declared dim as unknown, and so do we.
                Dimension::Value(v) => usize::try_from(*v).map_or(Dim::Unknown, Dim::Known),
                Dimension::Param(p) if !p.is_empty() => Dim::Symbol(p.clone()),
                _ => Dim::Unknown,
            })
            .collect::<Vec<Dim>>()
    });
    Ok((ValueKind::Tensor, Fact { dtype: DType::from_onnx_code(tt.elem_type), shape, value: None }))
}

fn convert_attributes(node: &NodeProto, scope: &Scope, ctx: &mut Ctx) -> Result<Attributes> {
    let mut items: Vec<(String, Attr)> = Vec::with_capacity(node.attribute.len());
    for a in &node.attribute {
        if a.name.is_empty() {
            bail!(InvalidModel, "an attribute has no name");
        }
        if items.iter().any(|(n, _)| *n == a.name) {
            bail!(InvalidModel, "attribute '{}' is given twice", a.name);
        }
        let attr = convert_attribute(a, scope, ctx).context(|| format!("attribute '{}'", a.name))?;
        items.push((a.name.clone(), attr));
    }
    Ok(Attributes::new(items))
}

/// Files before IR version 3 have no attribute type; the value that is present tells it.
fn implied_type(a: &AttributeProto) -> Result<i32> {
    use attr_type::*;
    Ok(if a.f.is_some() {
        FLOAT
    } else if a.i.is_some() {
        INT
    } else if a.s.is_some() {
        STRING
    } else if a.t.is_some() {
        TENSOR
    } else if a.g.is_some() {
        GRAPH
    } else if !a.floats.is_empty() {
        FLOATS
    } else if !a.ints.is_empty() {
        INTS
    } else if !a.strings.is_empty() {
        STRINGS
    } else if !a.tensors.is_empty() {
        TENSORS
    } else if !a.graphs.is_empty() {
        GRAPHS
    } else {
        bail!(InvalidModel, "the attribute has neither a type nor a value")
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn convert_attribute(a: &AttributeProto, scope: &Scope, ctx: &mut Ctx) -> Result<Attr> {
    use attr_type::*;
    if !a.ref_attr_name.is_empty() {
        bail!(InvalidModel, "refers to function attribute '{}' outside of a function", a.ref_attr_name);
    }
    let ty = if a.r#type != UNDEFINED { a.r#type } else { implied_type(a)? };
    let base_dir = ctx.base_dir;
    let missing = |what: &str| err!(InvalidModel, "has type {what} but no value");
    Ok(match ty {
        FLOAT => Attr::Float(a.f.unwrap_or(0.0)),
        INT => Attr::Int(a.i.unwrap_or(0)),
        STRING => Attr::String(lossy(a.s.as_deref().unwrap_or_default())),
        TENSOR => Attr::Tensor(Arc::new(tensor_from_proto(a.t.as_ref().ok_or_else(|| missing("TENSOR"))?, base_dir)?)),
        GRAPH => Attr::Graph(Arc::new(import_graph(a.g.as_ref().ok_or_else(|| missing("GRAPH"))?, Some(scope), ctx)?)),
        FLOATS => Attr::Floats(a.floats.clone()),
        INTS => Attr::Ints(a.ints.clone()),
        STRINGS => Attr::Strings(a.strings.iter().map(|s| lossy(s)).collect()),
        TENSORS => Attr::Tensors(
            a.tensors.iter().map(|t| tensor_from_proto(t, base_dir).map(Arc::new)).collect::<Result<_>>()?,
        ),
        GRAPHS => Attr::Graphs(
            a.graphs.iter().map(|g| import_graph(g, Some(scope), ctx).map(Arc::new)).collect::<Result<_>>()?,
        ),
        TYPE_PROTO => Attr::Type(match &a.tp {
            Some(TypeProto::Tensor(t)) => Some(t.elem_type),
            _ => None,
        }),
        SPARSE_TENSOR | SPARSE_TENSORS => bail!(Unsupported, "sparse tensor attributes are not supported"),
        TYPE_PROTOS => bail!(Unsupported, "attributes holding lists of types are not supported"),
        other => bail!(InvalidModel, "unknown attribute type {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;
    use crate::onnx::wire::enc::Enc;
    use crate::ops::Op;

    /// An op for tests that accepts any inputs and attributes.
    #[derive(Debug)]
    struct Any;

    impl Op for Any {
        fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>> {
            Ok(vec![])
        }
        fn eval(&self, _: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
            Ok(vec![])
        }
    }

    fn test_registry() -> Registry {
        let mut r = Registry::default();
        r.add("Relu", |_| Ok(Box::new(Any)));
        r.add("Any", |_| Ok(Box::new(Any)));
        r.add("If", |ctx| {
            ctx.attrs.req_graph("then_branch")?;
            ctx.attrs.req_graph("else_branch")?;
            Ok(Box::new(Any))
        });
        r.add("Picky", |ctx| if ctx.opset < 99 { Err(ctx.unsupported_version()) } else { Ok(Box::new(Any)) });
        r.add("Broken", |_| Err(err!(InvalidModel, "attribute 'k' is bad")));
        r.add_in("com.example", "Custom", |_| Ok(Box::new(Any)));
        r
    }

    fn import(bytes: &[u8]) -> Result<ImportedModel> {
        import_with_registry(bytes, None, &test_registry())
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Enc {
        let mut n = Enc::new().str(4, op);
        for i in inputs {
            n = n.str(1, i);
        }
        for o in outputs {
            n = n.str(2, o);
        }
        n
    }

    fn value_info(name: &str, elem: i64, dims: &[i64]) -> Enc {
        let mut shape = Enc::new();
        for &d in dims {
            shape = shape.msg(1, Enc::new().int(1, d));
        }
        Enc::new().str(1, name).msg(2, Enc::new().msg(1, Enc::new().int(1, elem).msg(2, shape)))
    }

    /// A model with float inputs and outputs of unknown shape, importing opset 13 of the default domain.
    fn model(nodes: Vec<Enc>, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        model_with(nodes, inputs, outputs, &[("", 13)])
    }

    fn model_with(nodes: Vec<Enc>, inputs: &[&str], outputs: &[&str], opsets: &[(&str, i64)]) -> Vec<u8> {
        let mut g = Enc::new();
        for n in nodes {
            g = g.msg(1, n);
        }
        for i in inputs {
            g = g.msg(11, Enc::new().str(1, i));
        }
        for o in outputs {
            g = g.msg(12, Enc::new().str(1, o));
        }
        let mut m = Enc::new().int(1, 8).msg(7, g);
        for (d, v) in opsets {
            m = m.msg(8, Enc::new().str(1, d).int(2, *v));
        }
        m.finish()
    }

    fn names(g: &Graph, ids: &[ValueId]) -> Vec<String> {
        ids.iter().map(|&i| g.values[i].name.clone()).collect()
    }

    #[test]
    fn subgraphs_capture_outer_values_through_every_level() {
        let bytes = include_bytes!("../../tests/models/decode/subgraph.onnx");
        let m = import(bytes).unwrap();
        let g = &m.graph;
        assert_eq!(names(g, &g.inputs), ["cond", "X"]);
        assert!(g.captures.is_empty());
        let then_branch = g.nodes[0].attrs.graph("then_branch").unwrap().unwrap();
        let else_branch = g.nodes[0].attrs.graph("else_branch").unwrap().unwrap();
        let mut captured = names(&then_branch, &then_branch.captures);
        captured.sort();
        assert_eq!(captured, ["W", "X", "cond"]);
        assert_eq!(names(&else_branch, &else_branch.captures), ["W"]);
        let inner = then_branch.nodes[0].attrs.graph("else_branch").unwrap().unwrap();
        assert_eq!(names(&inner, &inner.captures), ["W"]);
        // A captured constant keeps its value; a captured input keeps its declared type.
        let w = inner.values[inner.captures[0]].constant().unwrap();
        assert_eq!(w.as_slice::<f32>().unwrap(), &[1.0, -1.0]);
        let x = then_branch.find_value("X").unwrap();
        assert_eq!(then_branch.values[x].fact.concrete_shape(), Some(vec![2]));
        assert_eq!(names(&inner, &inner.outputs), ["ie"]);
        // Captured values are the node's trailing inputs, in `subgraph_captures` order.
        let inputs: Vec<ValueId> = g.nodes[0].inputs.iter().flatten().copied().collect();
        let mut expected = vec!["cond".to_string()];
        expected.extend(subgraph_captures(&g.nodes[0].attrs));
        assert_eq!(names(g, &inputs), expected);
        let inner_if = &then_branch.nodes[0];
        let inner_inputs: Vec<ValueId> = inner_if.inputs.iter().flatten().copied().collect();
        assert_eq!(names(&then_branch, &inner_inputs[1..]), subgraph_captures(&inner_if.attrs));
        assert!(subgraph_captures(&inner_if.attrs).contains(&"W".to_string()));
    }

    #[test]
    fn a_subgraph_output_may_be_an_outer_value() {
        let branch = Enc::new().str(2, "b").msg(12, Enc::new().str(1, "x"));
        let graph_attr = |name: &str| Enc::new().str(1, name).int(20, 5).msg(6, branch.clone());
        let n = node("If", &["x"], &["y"]).msg(5, graph_attr("then_branch")).msg(5, graph_attr("else_branch"));
        let m = import(&model(vec![n], &["x"], &["y"])).unwrap();
        let b = m.graph.nodes[0].attrs.graph("then_branch").unwrap().unwrap();
        assert_eq!(names(&b, &b.outputs), ["x"]);
        assert_eq!(b.outputs, b.captures);
    }

    #[test]
    fn undefined_names_are_errors() {
        let e = import(&model(vec![node("Relu", &["nope"], &["y"])], &["x"], &["y"])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.message, "node #0 (Relu): input 'nope' is not produced by any node, input or initializer");
        let e = import(&model(vec![node("Relu", &["x"], &["y"])], &["x"], &["z"])).unwrap_err();
        assert_eq!(e.message, "graph output 'z' is not produced by any node, input or initializer");
        let branch = Enc::new().msg(1, node("Relu", &["ghost"], &["o"])).msg(12, Enc::new().str(1, "o"));
        let attr = Enc::new().str(1, "then_branch").int(20, 5).msg(6, branch);
        let e = import(&model(vec![node("If", &["x"], &["y"]).msg(5, attr)], &["x"], &["y"])).unwrap_err();
        assert!(e.message.contains("input 'ghost' is not produced"), "{e}");
        assert!(e.message.starts_with("node #0 (If): attribute 'then_branch': "), "{e}");
    }

    #[test]
    fn values_are_produced_once() {
        let nodes = vec![node("Relu", &["x"], &["a"]), node("Relu", &["x"], &["a"])];
        let e = import(&model(nodes, &["x"], &["a"])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.message, "value 'a' is produced twice (again by node #1 (Relu))");
        let e = import(&model(vec![node("Relu", &["x"], &["x"])], &["x"], &["x"])).unwrap_err();
        assert!(e.message.contains("value 'x' is produced twice"), "{e}");
        let e = import(&model(vec![], &["x", "x"], &["x"])).unwrap_err();
        assert_eq!(e.message, "graph input 'x' is declared twice");
    }

    #[test]
    fn empty_names_are_missing_inputs_and_anonymous_outputs() {
        let m = import(&model(vec![node("Any", &["x", "", "x"], &["y", ""])], &["x"], &["y"])).unwrap();
        let n = &m.graph.nodes[0];
        let x = m.graph.find_value("x").unwrap();
        assert_eq!(n.inputs, [Some(x), None, Some(x)]);
        assert_eq!(n.outputs.len(), 2);
        assert_eq!(m.graph.values[n.outputs[1]].name, "");
        assert_eq!(m.graph.find_value("y"), Some(n.outputs[0]));
    }

    #[test]
    fn nodes_are_sorted_and_cycles_rejected() {
        let nodes = vec![node("Relu", &["b"], &["c"]), node("Relu", &["a"], &["b"]), node("Relu", &["x"], &["a"])];
        let m = import(&model(nodes, &["x"], &["c"])).unwrap();
        let order: Vec<String> = m.graph.nodes.iter().map(|n| m.graph.values[n.outputs[0]].name.clone()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        let nodes = vec![node("Relu", &["b"], &["a"]), node("Relu", &["a"], &["b"])];
        let e = import(&model(nodes, &["x"], &["a"])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert!(e.message.contains("cycle"), "{e}");
    }

    #[test]
    fn declared_types_become_facts() {
        let mut g = Enc::new()
            .msg(1, node("Relu", &["x"], &["h"]))
            .msg(1, node("Relu", &["h"], &["y"]))
            .msg(11, value_info("x", 10, &[2, 3]))
            .msg(12, value_info("y", 1, &[]))
            .msg(13, value_info("h", 7, &[5]));
        // An input of non-tensor type (a sequence) and one without a type.
        g = g.msg(11, Enc::new().str(1, "s").msg(2, Enc::new().msg(4, Enc::new()))).msg(11, Enc::new().str(1, "u"));
        let bytes = Enc::new().int(1, 8).msg(7, g).msg(8, Enc::new().int(2, 13)).finish();
        let m = import(&bytes).unwrap();
        let fact = |name: &str| m.graph.values[m.graph.find_value(name).unwrap()].fact.clone();
        assert_eq!((fact("x").dtype, fact("x").concrete_shape()), (Some(DType::F16), Some(vec![2, 3])));
        assert_eq!((fact("h").dtype, fact("h").concrete_shape()), (Some(DType::I64), Some(vec![5])));
        assert_eq!((fact("y").dtype, fact("y").concrete_shape()), (Some(DType::F32), Some(vec![])));
        assert_eq!((fact("s").dtype, fact("s").shape), (None, None));
        let kind = |name: &str| m.graph.values[m.graph.find_value(name).unwrap()].kind.clone();
        assert_eq!((kind("s"), kind("u"), kind("x")), (ValueKind::Sequence, ValueKind::Tensor, ValueKind::Tensor));
        assert_eq!((fact("u").dtype, fact("u").shape), (None, None));
    }

    #[test]
    fn negative_declared_dims_are_dynamic() {
        // paddle2onnx declares dynamic dims as -1.
        let g = Enc::new().msg(11, value_info("x", 1, &[-1, 3, -3])).msg(12, value_info("x", 1, &[-1, 3, -1]));
        let bytes = Enc::new().msg(7, g).msg(8, Enc::new().int(2, 13)).finish();
        let m = import(&bytes).unwrap();
        let x = &m.graph.values[m.graph.inputs[0]];
        assert_eq!(x.fact.shape, Some(vec![Dim::Unknown, Dim::Known(3), Dim::Unknown]));
    }

    #[test]
    fn attributes_convert_to_ir_values() {
        let t = Enc::new().int(2, 7).packed_ints(1, &[2]).packed_ints(7, &[4, 5]);
        let attrs = [
            Enc::new().str(1, "f").int(20, 1).float(2, 0.5),
            Enc::new().str(1, "i").int(20, 2).int(3, -3),
            Enc::new().str(1, "s").int(20, 3).bytes(4, b"caf\xc3\xa9"),
            Enc::new().str(1, "t").int(20, 4).msg(5, t.clone()),
            Enc::new().str(1, "fs").int(20, 6).packed_floats(7, &[1.0, 2.0]),
            Enc::new().str(1, "is").int(20, 7).packed_ints(8, &[1, -1]),
            Enc::new().str(1, "ss").int(20, 8).bytes(9, b"a").bytes(9, b"\xff"),
            Enc::new().str(1, "ts").int(20, 9).msg(10, t),
            Enc::new().str(1, "tp").int(20, 13).msg(14, Enc::new().msg(1, Enc::new().int(1, 9))),
            Enc::new().str(1, "zero").int(20, 2),      // an int left at its default
            Enc::new().str(1, "old_style").int(3, 42), // no type field, as before IR version 3
            Enc::new().str(1, "old_ints").packed_ints(8, &[7]),
        ];
        let mut n = node("Any", &["x"], &["y"]);
        for a in attrs {
            n = n.msg(5, a);
        }
        let m = import(&model(vec![n], &["x"], &["y"])).unwrap();
        let a = &m.graph.nodes[0].attrs;
        assert_eq!(a.float("f").unwrap(), Some(0.5));
        assert_eq!(a.int("i").unwrap(), Some(-3));
        assert_eq!(a.string("s").unwrap().as_deref(), Some("café"));
        assert_eq!(a.tensor("t").unwrap().unwrap().as_slice::<i64>().unwrap(), &[4, 5]);
        assert_eq!(a.floats("fs").unwrap(), Some(vec![1.0, 2.0]));
        assert_eq!(a.ints("is").unwrap(), Some(vec![1, -1]));
        assert_eq!(a.strings("ss").unwrap(), Some(vec!["a".to_string(), "\u{fffd}".to_string()]));
        assert!(matches!(a.get("ts"), Some(Attr::Tensors(ts)) if ts.len() == 1));
        assert!(matches!(a.get("tp"), Some(Attr::Type(Some(9)))));
        assert_eq!(a.int("zero").unwrap(), Some(0));
        assert_eq!(a.int("old_style").unwrap(), Some(42));
        assert_eq!(a.ints("old_ints").unwrap(), Some(vec![7]));
    }

    #[test]
    fn bad_attributes_are_errors() {
        let with_attr = |a: Enc| import(&model(vec![node("Any", &["x"], &["y"]).msg(5, a)], &["x"], &["y"]));
        let e = with_attr(Enc::new().str(1, "sp").int(20, 11).msg(22, Enc::new())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.message, "node #0 (Any): attribute 'sp': sparse tensor attributes are not supported");
        let e = with_attr(Enc::new().str(1, "r").int(20, 2).str(21, "outer")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert!(e.message.contains("outside of a function"), "{e}");
        let e = with_attr(Enc::new().str(1, "q").int(20, 77)).unwrap_err();
        assert!(e.message.ends_with("unknown attribute type 77"), "{e}");
        let e = with_attr(Enc::new().str(1, "t").int(20, 4)).unwrap_err();
        assert!(e.message.ends_with("has type TENSOR but no value"), "{e}");
        let e = with_attr(Enc::new().str(1, "nothing")).unwrap_err();
        assert!(e.message.ends_with("neither a type nor a value"), "{e}");
        let e = with_attr(Enc::new().str(1, "t").int(20, 4).msg(5, Enc::new().int(2, 1).packed_ints(1, &[-1])))
            .unwrap_err();
        assert_eq!(e.message, "node #0 (Any): attribute 't': tensor: negative dim -1 in dims [-1]");
        let n = node("Any", &["x"], &["y"])
            .msg(5, Enc::new().str(1, "a").int(3, 1))
            .msg(5, Enc::new().str(1, "a").int(3, 2));
        let e = import(&model(vec![n], &["x"], &["y"])).unwrap_err();
        assert!(e.message.contains("attribute 'a' is given twice"), "{e}");
    }

    #[test]
    fn every_unsupported_operator_is_reported_at_once() {
        let bytes = include_bytes!("../../tests/models/decode/unsupported.onnx");
        let e = import(bytes).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.message, "unsupported operators: Foo (opset 13), com.microsoft:Bar (opset 1)");
        // Builders that refuse a setting are reported alongside; other builder errors stop the import.
        let nodes = vec![node("Picky", &["x"], &["a"]).str(3, "p"), node("Nope", &["a"], &["y"])];
        let e = import(&model(nodes, &["x"], &["y"])).unwrap_err();
        assert_eq!(
            e.message,
            "unsupported operators: Nope (opset 13); node 'p' (Picky): Picky is not supported at opset 13"
        );
        let e = import(&model(vec![node("Broken", &["x"], &["y"])], &["x"], &["y"])).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidModel, "node #0 (Broken): attribute 'k' is bad"));
        // Operators missing inside subgraphs count too, and model-local functions are pointed out.
        let branch = Enc::new().msg(1, node("Inner", &["x"], &["o"])).msg(12, Enc::new().str(1, "o"));
        let attr = |n: &str| Enc::new().str(1, n).int(20, 5).msg(6, branch.clone());
        let nodes = vec![
            node("If", &["x"], &["a"]).msg(5, attr("then_branch")).msg(5, attr("else_branch")),
            node("MyFn", &["a"], &["y"]).str(7, "local"),
        ];
        let mut bytes = model_with(nodes, &["x"], &["y"], &[("", 13), ("local", 1)]);
        bytes.extend(Enc::new().msg(25, Enc::new().str(1, "MyFn").str(10, "local")).finish());
        let e = import(&bytes).unwrap_err();
        assert_eq!(e.message, "unsupported operators: Inner (opset 13), local:MyFn (opset 1, a model-local function)");
    }

    #[test]
    fn opsets_come_from_the_model() {
        let n = node("Custom", &["x"], &["y"]).str(7, "com.example");
        let e = import(&model(vec![n.clone()], &["x"], &["y"])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.message, "node #0 (Custom): the model imports no opset for domain 'com.example'");
        let m = import(&model_with(vec![n], &["x"], &["y"], &[("ai.onnx", 12), ("com.example", 2), ("", 14)])).unwrap();
        assert_eq!(m.opsets, [("".to_string(), 14), ("com.example".to_string(), 2)]);
        assert_eq!(m.graph.nodes[0].domain, "com.example");
        // Before IR version 3 there were no opset imports: opset 1 is meant.
        let mut bytes = model_with(vec![node("Picky", &["x"], &["y"])], &["x"], &["y"], &[]);
        bytes[1] = 2; // ir_version 8 -> 2
        let e = import(&bytes).unwrap_err();
        assert!(e.message.ends_with("Picky is not supported at opset 1"), "{e}");
        let bytes = model_with(vec![node("Relu", &["x"], &["y"])], &["x"], &["y"], &[]);
        assert!(import(&bytes).unwrap_err().message.contains("imports no opset for domain ''"));
    }

    #[test]
    fn models_without_graphs_or_with_sparse_initializers() {
        let e = import(&Enc::new().int(1, 8).finish()).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidModel, "the model has no graph"));
        let sparse = Enc::new().msg(1, Enc::new().str(8, "sp").int(2, 1)).packed_ints(3, &[4]);
        // Unused, a sparse initializer is ignored; used, it is reported.
        let g = |input: &str| {
            Enc::new()
                .msg(1, node("Relu", &[input], &["y"]))
                .msg(11, Enc::new().str(1, "x"))
                .msg(12, Enc::new().str(1, "y"))
                .msg(15, sparse.clone())
        };
        let bytes = Enc::new().int(1, 8).msg(7, g("x")).msg(8, Enc::new().int(2, 13)).finish();
        assert!(import(&bytes).is_ok());
        let bytes = Enc::new().int(1, 8).msg(7, g("sp")).msg(8, Enc::new().int(2, 13)).finish();
        let e = import(&bytes).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("sparse initializer"), "{e}");
    }
}
