//! `ai.onnx.ml` TreeEnsemble (opset 5): each row of `X [N, F]` walks every tree from its root to a
//! leaf; leaf weights are aggregated per target into `Y [N, n_targets]`.

use super::ml::ML;
use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Attributes, DType, Dim, Fact, Tensor};
use crate::{bail, err, Result};

pub fn register(r: &mut Registry) {
    r.add_in(ML, "TreeEnsemble", build);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Branch {
    Node(usize),
    Leaf(usize),
}

#[derive(Debug)]
struct TreeNode {
    mode: Mode,
    feature: usize,
    split: f64,
    /// The set of a `Member` node.
    members: Vec<f64>,
    missing_goes_true: bool,
    on_true: Branch,
    on_false: Branch,
}

impl TreeNode {
    fn goes_true(&self, x: f64) -> bool {
        let hit = match self.mode {
            Mode::Leq => x <= self.split,
            Mode::Lt => x < self.split,
            Mode::Gte => x >= self.split,
            Mode::Gt => x > self.split,
            Mode::Eq => x == self.split,
            Mode::Neq => x != self.split,
            Mode::Member => self.members.contains(&x),
        };
        hit || (self.missing_goes_true && x.is_nan())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Average,
    Sum,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
}

#[derive(Debug)]
struct TreeEnsemble {
    nodes: Vec<TreeNode>,
    /// (target, weight) of each leaf.
    leaves: Vec<(usize, f64)>,
    roots: Vec<usize>,
    n_targets: usize,
    /// One more than the largest feature id: the least number of columns X must have.
    min_features: usize,
    aggregate: Aggregate,
    post: PostTransform,
}

/// A list attribute of indices, each checked to be non-negative.
fn indices(a: &Attributes, name: &str) -> Result<Vec<usize>> {
    let v = a.required(name, a.ints(name))?;
    v.iter()
        .map(|&i| usize::try_from(i).map_err(|_| err!(InvalidModel, "TreeEnsemble {name} has a negative entry ({i})")))
        .collect()
}

fn float_tensor(a: &Attributes, name: &str) -> Result<Option<Vec<f64>>> {
    a.tensor(name)?.map(|t| t.to_f64_vec()).transpose()
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    if ctx.opset < 5 {
        return Err(ctx.unsupported_version());
    }
    let aggregate = match a.int_or("aggregate_function", 1)? {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        v => bail!(InvalidModel, "TreeEnsemble aggregate_function {v} is not 0 to 3"),
    };
    let post = match a.int_or("post_transform", 0)? {
        0 => PostTransform::None,
        1 => PostTransform::Softmax,
        2 => PostTransform::Logistic,
        3 => PostTransform::SoftmaxZero,
        4 => bail!(Unsupported, "TreeEnsemble post_transform PROBIT is not supported"),
        v => bail!(InvalidModel, "TreeEnsemble post_transform {v} is not 0 to 4"),
    };
    let modes = a.required("nodes_modes", a.tensor("nodes_modes"))?.to_i64_vec()?;
    let features = indices(a, "nodes_featureids")?;
    let splits = a.required("nodes_splits", float_tensor(a, "nodes_splits"))?;
    let true_ids = indices(a, "nodes_truenodeids")?;
    let true_leafs = indices(a, "nodes_trueleafs")?;
    let false_ids = indices(a, "nodes_falsenodeids")?;
    let false_leafs = indices(a, "nodes_falseleafs")?;
    let missing_true = a.ints("nodes_missing_value_tracks_true")?;
    let n = modes.len();
    let lengths = [features.len(), splits.len(), true_ids.len(), true_leafs.len(), false_ids.len(), false_leafs.len()];
    if lengths.iter().any(|&l| l != n) || missing_true.as_ref().is_some_and(|m| m.len() != n) {
        bail!(InvalidModel, "TreeEnsemble nodes_* attributes differ in length ({n} modes, others {lengths:?})");
    }

    let targets = indices(a, "leaf_targetids")?;
    let weights = a.required("leaf_weights", float_tensor(a, "leaf_weights"))?;
    if targets.len() != weights.len() {
        bail!(InvalidModel, "TreeEnsemble has {} leaf_targetids but {} leaf_weights", targets.len(), weights.len());
    }
    let n_targets = usize::try_from(a.req_int("n_targets")?)
        .map_err(|_| err!(InvalidModel, "TreeEnsemble n_targets is negative"))?;
    if let Some(t) = targets.iter().find(|&&t| t >= n_targets) {
        bail!(InvalidModel, "TreeEnsemble leaf target {t} out of range for n_targets {n_targets}");
    }
    let leaves: Vec<(usize, f64)> = targets.into_iter().zip(weights).collect();

    // Each BRANCH_MEMBER node, in node order, takes the next NaN-terminated run of members.
    let mut sets = vec![];
    let mut set = vec![];
    for v in float_tensor(a, "membership_values")?.unwrap_or_default() {
        if v.is_nan() {
            sets.push(std::mem::take(&mut set));
        } else {
            set.push(v);
        }
    }
    let member_nodes = modes.iter().filter(|&&m| m == 6).count();
    if sets.len() != member_nodes {
        bail!(
            InvalidModel,
            "TreeEnsemble membership_values has {} NaN-terminated sets for {member_nodes} BRANCH_MEMBER nodes",
            sets.len()
        );
    }
    let mut sets = sets.into_iter();
    let branch = |is_leaf: usize, id: usize, what: &str| -> Result<Branch> {
        let (branch, count) = if is_leaf != 0 { (Branch::Leaf(id), leaves.len()) } else { (Branch::Node(id), n) };
        if id >= count {
            bail!(InvalidModel, "TreeEnsemble {what} {id} out of range ({count} entries)");
        }
        Ok(branch)
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mode = match modes[i] {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            m => bail!(InvalidModel, "TreeEnsemble node {i} has mode {m}, not 0 to 6"),
        };
        let members = if mode == Mode::Member { sets.next().unwrap_or_default() } else { vec![] };
        nodes.push(TreeNode {
            mode,
            feature: features[i],
            split: splits[i],
            members,
            missing_goes_true: missing_true.as_ref().is_some_and(|m| m[i] != 0),
            on_true: branch(true_leafs[i], true_ids[i], "true branch")?,
            on_false: branch(false_leafs[i], false_ids[i], "false branch")?,
        });
    }
    let roots = indices(a, "tree_roots")?;
    if let Some(r) = roots.iter().find(|&&r| r >= n) {
        bail!(InvalidModel, "TreeEnsemble tree root {r} out of range ({n} nodes)");
    }
    let min_features = features.iter().map(|&f| f + 1).max().unwrap_or(0);
    Ok(Box::new(TreeEnsemble { nodes, leaves, roots, n_targets, min_features, aggregate, post }))
}

impl TreeEnsemble {
    /// The leaf that `row` reaches from `root`; a cycle in the nodes is an error, not a hang.
    fn leaf_of(&self, root: usize, row: &[f64]) -> Result<(usize, f64)> {
        let mut at = Branch::Node(root);
        for _ in 0..=self.nodes.len() {
            match at {
                Branch::Leaf(l) => return Ok(self.leaves[l]),
                Branch::Node(i) => {
                    let node = &self.nodes[i];
                    at = if node.goes_true(row[node.feature]) { node.on_true } else { node.on_false };
                }
            }
        }
        bail!(InvalidModel, "TreeEnsemble tree with root {root} has a cycle")
    }

    fn transform(&self, scores: &mut [f64]) {
        match self.post {
            PostTransform::None => {}
            PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = 1.0 / (1.0 + (-*s).exp())),
            PostTransform::Softmax | PostTransform::SoftmaxZero => {
                // SOFTMAX_ZERO leaves exact zeros at zero and normalises the rest among themselves.
                let skip_zero = self.post == PostTransform::SoftmaxZero;
                let live = |s: f64| !(skip_zero && s == 0.0);
                let max = scores.iter().copied().filter(|&s| live(s)).fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for s in scores.iter_mut().filter(|s| live(**s)) {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                if sum > 0.0 {
                    scores.iter_mut().for_each(|s| *s /= sum);
                }
            }
        }
    }
}

impl Op for TreeEnsemble {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match x.shape.as_deref() {
            None => None,
            Some([n, _]) => Some(vec![n.clone(), Dim::Known(self.n_targets)]),
            Some(s) => bail!(Shape, "TreeEnsemble takes X of shape [N, F], got rank {}", s.len()),
        };
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let dtype = x.dtype();
        let largest = match dtype {
            DType::F32 => f64::from(f32::MAX),
            DType::F64 => f64::MAX,
            DType::F16 => f64::from(half::f16::MAX),
            d => bail!(Unsupported, "TreeEnsemble does not take {d}"),
        };
        let &[rows, features] = x.shape() else {
            bail!(Shape, "TreeEnsemble takes X of shape [N, F], got {:?}", x.shape())
        };
        if features < self.min_features {
            bail!(Runtime, "TreeEnsemble uses feature {} but X has {features} columns", self.min_features - 1);
        }
        let out_shape = vec![rows, self.n_targets];
        // MIN and MAX start from the type's extreme, which stays for targets no leaf reaches.
        let start = match self.aggregate {
            Aggregate::Average | Aggregate::Sum => 0.0,
            Aggregate::Min => largest,
            Aggregate::Max => -largest,
        };
        let mut out = try_vec(checked_len(&out_shape, dtype)?, start)?;
        let values = x.to_f64_vec()?;
        for (row, scores) in values.chunks_exact(features.max(1)).zip(out.chunks_exact_mut(self.n_targets.max(1))) {
            for &root in &self.roots {
                let (target, w) = self.leaf_of(root, row)?;
                let s = &mut scores[target];
                *s = match self.aggregate {
                    Aggregate::Sum => *s + w,
                    Aggregate::Average => *s + w / self.roots.len() as f64,
                    Aggregate::Min => s.min(w),
                    Aggregate::Max => s.max(w),
                };
            }
            self.transform(scores);
        }
        Ok(vec![Tensor::new(out_shape, out)?.cast_numeric(dtype)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::ml::tests::build_in;
    use std::sync::Arc;

    fn tensor<T: crate::ir::Elem>(v: Vec<T>) -> Attr {
        Attr::Tensor(Arc::new(Tensor::vector(v)))
    }

    /// The ONNX node test's single tree: node 0 (x0 <= 3.14) -> node 1 (x0 <= 1.2) or node 2 (x0 <= 4.2).
    #[allow(clippy::approx_constant)] // 3.14 is the test's split, not pi
    fn single_tree() -> Vec<(&'static str, Attr)> {
        vec![
            ("n_targets", Attr::Int(2)),
            ("aggregate_function", Attr::Int(1)),
            ("tree_roots", Attr::Ints(vec![0])),
            ("nodes_modes", tensor(vec![0u8, 0, 0])),
            ("nodes_featureids", Attr::Ints(vec![0, 0, 0])),
            ("nodes_splits", tensor(vec![3.14f64, 1.2, 4.2])),
            ("nodes_truenodeids", Attr::Ints(vec![1, 0, 1])),
            ("nodes_trueleafs", Attr::Ints(vec![0, 1, 1])),
            ("nodes_falsenodeids", Attr::Ints(vec![2, 2, 3])),
            ("nodes_falseleafs", Attr::Ints(vec![0, 1, 1])),
            ("leaf_targetids", Attr::Ints(vec![0, 1, 0, 1])),
            ("leaf_weights", tensor(vec![5.23f64, 12.12, -12.23, 7.21])),
        ]
    }

    fn run(attrs: Vec<(&str, Attr)>, x: &Tensor) -> Result<Tensor> {
        let op = build_in(ML, "TreeEnsemble", 5, attrs, 1, 1)?;
        Ok(op.eval(&[Some(x)])?.remove(0))
    }

    fn set(attrs: &mut [(&str, Attr)], name: &str, value: Attr) {
        attrs.iter_mut().find(|(n, _)| *n == name).unwrap().1 = value;
    }

    // Expected values from the ONNX node tests (onnx.reference TreeEnsemble).
    #[test]
    fn single_tree_sums_leaves() {
        let x = Tensor::new(vec![3, 2], vec![1.2f64, 3.4, -0.12, 1.66, 4.14, 1.77]).unwrap();
        let y = run(single_tree(), &x).unwrap();
        assert_eq!(y, Tensor::new(vec![3, 2], vec![5.23f64, 0.0, 5.23, 0.0, 0.0, 12.12]).unwrap());
        // Two copies of the tree averaged give the same; LOGISTIC maps 0 to 0.5.
        let mut two = single_tree();
        set(&mut two, "tree_roots", Attr::Ints(vec![0, 0]));
        set(&mut two, "aggregate_function", Attr::Int(0));
        two.push(("post_transform", Attr::Int(2)));
        let y = run(two, &x).unwrap();
        let want = [0.9946749823142578, 0.5, 0.9946749823142578, 0.5, 0.5, 0.9999945506021924];
        for (g, w) in y.as_slice::<f64>().unwrap().iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn set_membership() {
        let attrs = vec![
            ("n_targets", Attr::Int(4)),
            ("membership_values", tensor(vec![1.2f32, 3.7, 8.0, 9.0, f32::NAN, 12.0, 7.0, f32::NAN])),
            ("tree_roots", Attr::Ints(vec![0])),
            ("nodes_modes", tensor(vec![0u8, 6, 6])),
            ("nodes_featureids", Attr::Ints(vec![0, 0, 0])),
            ("nodes_splits", tensor(vec![11.0f32, 232344.0, f32::NAN])),
            ("nodes_truenodeids", Attr::Ints(vec![1, 0, 1])),
            ("nodes_trueleafs", Attr::Ints(vec![0, 1, 1])),
            ("nodes_falsenodeids", Attr::Ints(vec![2, 2, 3])),
            ("nodes_falseleafs", Attr::Ints(vec![1, 0, 1])),
            ("leaf_targetids", Attr::Ints(vec![0, 1, 2, 3])),
            ("leaf_weights", tensor(vec![1.0f32, 10.0, 1000.0, 100.0])),
        ];
        let x = Tensor::new(vec![6, 1], vec![1.2f32, 3.4, -0.12, f32::NAN, 12.0, 7.0]).unwrap();
        let y = run(attrs.clone(), &x).unwrap();
        #[rustfmt::skip]
        let want = vec![1.0f32, 0., 0., 0., 0., 0., 0., 100., 0., 0., 0., 100.,
                        0., 0., 1000., 0., 0., 0., 1000., 0., 0., 10., 0., 0.];
        assert_eq!(y, Tensor::new(vec![6, 4], want).unwrap());
        let mut short = attrs;
        set(&mut short, "membership_values", tensor(vec![1.0f32, f32::NAN, 2.0]));
        assert!(run(short, &x).unwrap_err().message.contains("membership_values"));
    }

    #[test]
    fn bad_trees_are_errors() {
        let x = Tensor::new(vec![1, 2], vec![0.0f64, 0.0]).unwrap();
        let mut a = single_tree();
        set(&mut a, "nodes_truenodeids", Attr::Ints(vec![1, 0, 9]));
        assert!(run(a, &x).unwrap_err().message.contains("true branch 9 out of range"));
        let mut a = single_tree();
        set(&mut a, "leaf_targetids", Attr::Ints(vec![0, 1, 0, 2]));
        assert!(run(a, &x).unwrap_err().message.contains("leaf target 2"));
        let mut a = single_tree();
        set(&mut a, "nodes_featureids", Attr::Ints(vec![0, 5, 0]));
        assert!(run(a, &x).unwrap_err().message.contains("feature 5"));
        // Node 0's true branch loops back to node 0.
        let mut a = single_tree();
        set(&mut a, "nodes_truenodeids", Attr::Ints(vec![0, 0, 1]));
        assert!(run(a, &x).unwrap_err().message.contains("cycle"));
        let mut a = single_tree();
        set(&mut a, "tree_roots", Attr::Ints(vec![3]));
        assert!(run(a, &x).unwrap_err().message.contains("root 3"));
    }
}
