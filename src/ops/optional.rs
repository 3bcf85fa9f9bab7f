//! Optional ops: Optional, OptionalHasElement and OptionalGetElement. From opset 18 on, the last
//! two also take a plain tensor or sequence (which counts as present), and OptionalHasElement may
//! have no input at all (which counts as empty); earlier opsets are read the same way, since that
//! only accepts more models.

use super::{input, opt_input, runs_on_data, Op, Registry};
use crate::ir::{Attr, DType, Data, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("Optional", |ctx| {
        // Without an input, `type` says what the empty optional would hold; only a tensor's
        // element type is kept (for inference), the rest of it matters to no kernel.
        let dtype = match ctx.attrs.get("type") {
            Some(Attr::Type(code)) => code.and_then(DType::from_onnx_code),
            _ => None,
        };
        if ctx.num_inputs == 0 && !ctx.attrs.has("type") {
            bail!(InvalidModel, "Optional without an input needs the 'type' attribute");
        }
        Ok(Box::new(OptionalOp { dtype }))
    });
    r.add("OptionalHasElement", |_| Ok(Box::new(OptionalHasElement)));
    r.add("OptionalGetElement", |_| Ok(Box::new(OptionalGetElement)));
}

#[derive(Debug)]
struct OptionalOp {
    dtype: Option<DType>,
}

impl Op for OptionalOp {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![match opt_input(inputs, 0) {
            Some(f) => Fact { dtype: f.dtype, shape: f.shape.clone(), value: None },
            None => Fact { dtype: self.dtype, shape: None, value: None },
        }])
    }

    runs_on_data!("Optional");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        if let Some(Data::Optional(_)) = opt_input(inputs, 0) {
            bail!(InvalidInput, "Optional takes a tensor or a sequence, got an optional");
        }
        Ok(vec![Data::Optional(opt_input(inputs, 0).map(|d| Box::new(d.clone())))])
    }
}

#[derive(Debug)]
struct OptionalHasElement;

impl Op for OptionalHasElement {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![Fact::concrete(DType::Bool, &[])])
    }

    runs_on_data!("OptionalHasElement");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let present = match opt_input(inputs, 0) {
            None | Some(Data::Optional(None)) => false,
            Some(_) => true,
        };
        Ok(vec![Data::Tensor(Tensor::scalar(present))])
    }
}

#[derive(Debug)]
struct OptionalGetElement;

impl Op for OptionalGetElement {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let f = input(inputs, 0)?;
        Ok(vec![Fact { dtype: f.dtype, shape: f.shape.clone(), value: None }])
    }

    runs_on_data!("OptionalGetElement");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        Ok(vec![match input(inputs, 0)? {
            Data::Optional(Some(d)) => d.as_ref().clone(),
            Data::Optional(None) => bail!(InvalidInput, "the optional input is empty"),
            d => d.clone(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Sequence, ValueKind};
    use crate::ops::activation::test_util::{build, run_data_op as run};
    use crate::ErrorKind;

    #[test]
    fn optional_wraps_and_get_element_unwraps() {
        let x = Data::Tensor(Tensor::vector(vec![1f32, 2., 3., 4.]));
        let some = run("Optional", vec![], &[Some(&x)]).unwrap();
        assert_eq!(some.type_name(), "optional(tensor(float32))");
        assert!(some.matches(&ValueKind::Optional(Box::new(ValueKind::Tensor))));
        assert_eq!(run("OptionalGetElement", vec![], &[Some(&some)]).unwrap(), x);
        // Opset 18: a plain tensor or sequence is its own element.
        assert_eq!(run("OptionalGetElement", vec![], &[Some(&x)]).unwrap(), x);
        let s = Data::Sequence(Sequence::empty(DType::I32));
        assert_eq!(run("OptionalGetElement", vec![], &[Some(&s)]).unwrap(), s);

        let none = run("Optional", vec![("type", Attr::Type(Some(1)))], &[]).unwrap();
        assert_eq!(none, Data::Optional(None));
        let e = run("OptionalGetElement", vec![], &[Some(&none)]).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidInput, "the optional input is empty"));
        let e = run("Optional", vec![], &[Some(&some)]).unwrap_err();
        assert_eq!(e.message, "Optional takes a tensor or a sequence, got an optional");
        let e = build("Optional", 15, vec![], 1);
        assert!(e.is_ok(), "the importer's node has one input here");
        let attrs = crate::ir::Attributes::default();
        let ctx = super::super::BuildCtx {
            op_type: "Optional",
            domain: "",
            opset: 15,
            attrs: &attrs,
            num_inputs: 0,
            num_outputs: 1,
        };
        let e = crate::ops::registry().get("", "Optional").unwrap()(&ctx).unwrap_err();
        assert_eq!(e.message, "Optional without an input needs the 'type' attribute");
    }

    #[test]
    fn has_element_counts_tensors_as_present_and_missing_inputs_as_empty() {
        let has = |d: Option<&Data>| run("OptionalHasElement", vec![], &[d]).unwrap();
        let (yes, no) = (Data::Tensor(Tensor::scalar(true)), Data::Tensor(Tensor::scalar(false)));
        let x = Data::Tensor(Tensor::scalar(1f32));
        assert_eq!(has(Some(&Data::Optional(Some(Box::new(x.clone()))))), yes);
        assert_eq!(has(Some(&Data::Optional(None))), no);
        assert_eq!(has(Some(&x)), yes);
        assert_eq!(has(None), no);
        assert_eq!(run("OptionalHasElement", vec![], &[]).unwrap(), no);
    }

    #[test]
    fn facts_follow_the_element() {
        let op = build("Optional", 15, vec![("type", Attr::Type(Some(7)))], 1).unwrap();
        assert_eq!(op.infer(&[]).unwrap()[0].dtype, Some(DType::I64));
        let f = Fact::concrete(DType::F32, &[4]);
        let op = build("OptionalGetElement", 18, vec![], 1).unwrap();
        assert_eq!(op.infer(&[Some(&f)]).unwrap()[0].concrete_shape(), Some(vec![4]));
        let op = build("OptionalHasElement", 18, vec![], 1).unwrap();
        assert_eq!(op.infer(&[None]).unwrap()[0].concrete_shape(), Some(vec![]));
    }
}
