//! Export to TransformerLens: `model.safetensors` with TransformerLens state-dict names and shapes (our module
//! paths already are those names) and `config.json` with the matching `HookedTransformerConfig` fields.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use crate::config::{Activation, Normalization};
use crate::error::ForwardError;
use crate::model::{Transformer, int_tensor};
use crate::tasks::Examples;
use host::array::HostArray;

/// Every float parameter of a module, keyed by its dotted path, as (shape, row-major values).
pub fn named_parameters<M: Module>(module: &M) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    parameters_in_order(module)
        .into_iter()
        .map(|(path, shape, values)| (path, (shape, values)))
        .collect()
}

/// Every float parameter of a module as (dotted path, shape, row-major values), in the order the module visits
/// them (the order a flat parameter vector follows).
pub fn parameters_in_order<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = param.val();
            let shape = tensor.dims().to_vec();
            let values = tensor
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap_or_default();
            self.out.push((self.path.join("."), shape, values));
        }
    }
    let mut collect = Collect {
        path: vec![],
        out: vec![],
    };
    module.visit(&mut collect);
    collect.out
}

/// `module` with every float parameter replaced by the array of its dotted path in `params` (the inverse of
/// [`named_parameters`]), on `device`: how a snapshot of the weights becomes a model again without reading a
/// checkpoint. A path `params` lacks, or an array of another shape, is an error naming it.
pub fn with_parameters<M: Module>(
    module: M,
    params: &BTreeMap<String, HostArray>,
    device: &Device,
) -> Result<M, ForwardError> {
    struct Set<'a> {
        path: Vec<String>,
        params: &'a BTreeMap<String, HostArray>,
        device: &'a Device,
        missing: Option<String>,
    }
    impl ModuleMapper for Set<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = self.path.join(".");
            let shape = param.val().dims();
            match self.params.get(&path) {
                Some(array) if array.shape == shape => {
                    Param::from_data(TensorData::new(array.data.clone(), shape), self.device)
                }
                _ => {
                    self.missing.get_or_insert(path);
                    param
                }
            }
        }
    }
    let mut set = Set {
        path: vec![],
        params,
        device,
        missing: None,
    };
    let module = module.map(&mut set);
    match set.missing {
        None => Ok(module),
        Some(path) => Err(ForwardError::NoSuchPart(format!(
            "the weights have no parameter `{path}` of the model's shape"
        ))),
    }
}

/// The `HookedTransformerConfig` fields that make TransformerLens build this exact model.
pub fn hooked_transformer_config(model: &Transformer) -> serde_json::Value {
    let d = &model.dims;
    json!({
        "n_layers": d.n_layers,
        "d_model": d.d_model,
        "n_ctx": d.n_ctx,
        "d_head": d.d_head,
        "n_heads": d.n_heads,
        "d_mlp": d.d_mlp,
        "d_vocab": d.d_vocab,
        "d_vocab_out": d.d_vocab_out,
        "act_fn": match d.act_fn { Activation::Relu => "relu", Activation::Gelu => "gelu" },
        "normalization_type": match d.normalization { Normalization::None => None, Normalization::Ln => Some("LN") },
        "attn_only": d.attn_only,
        "positional_embedding_type": "standard",
        "eps": crate::model::layer_norm_eps(),
        "default_prepend_bos": false,
        "tokenizer_name": null,
    })
}

/// Writes `model.safetensors`, `config.json` and `sample.safetensors` into `out_dir`. The sample holds
/// `tokens` [n, n_ctx] (int64) and our `logits` [n, n_ctx, d_vocab_out] on them, so a reader can check that
/// its copy of the model computes the same thing.
/// Writes the export into `out` (replacing an earlier one). The caller holds the run's write lock.
pub fn export(model: &Transformer, sample: &Examples, out: &Path) -> std::io::Result<()> {
    // Written whole under a temporary sibling name, then renamed into place: a kill leaves the previous
    // export (or none), never a directory with a 0-byte or missing file.
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    // Partial exports of killed processes go first (the caller holds the run's lock: no other export runs).
    let prefix = format!(".{name}.partial-");
    for entry in std::fs::read_dir(parent)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    let staging = parent.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir(&staging)?;
    write_export(model, sample, &staging)?;
    for file in ["model.safetensors", "config.json", "sample.safetensors"] {
        std::fs::File::open(staging.join(file))?.sync_all()?;
    }
    host::failpoint::hit("export-written");
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&staging, out)
}

/// The three export files, into `out_dir`.
fn write_export(model: &Transformer, sample: &Examples, out_dir: &Path) -> std::io::Result<()> {
    let params: Vec<NamedBytes> = named_parameters(model)
        .into_iter()
        .map(|(name, (shape, values))| (name, Dtype::F32, shape, f32_bytes(&values)))
        .collect();
    write_safetensors(&out_dir.join("model.safetensors"), &params)?;
    host::failpoint::hit("export-model");
    let config = serde_json::to_vec_pretty(&hooked_transformer_config(model))
        .map_err(std::io::Error::other)?;
    std::fs::write(out_dir.join("config.json"), config)?;

    let device = model.devices().into_iter().next().unwrap_or_default();
    let tokens = int_tensor(&sample.tokens, sample.n, sample.seq_len, &device);
    let logits = model.valid().forward(tokens);
    let shape = logits.dims().to_vec();
    let logits = logits
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let token_bytes: Vec<u8> = sample
        .tokens
        .iter()
        .flat_map(|&t| i64::from(t).to_le_bytes())
        .collect();
    let sample = [
        (
            "tokens".to_owned(),
            Dtype::I64,
            vec![sample.n, sample.seq_len],
            token_bytes,
        ),
        ("logits".to_owned(), Dtype::F32, shape, f32_bytes(&logits)),
    ];
    write_safetensors(&out_dir.join("sample.safetensors"), &sample)
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
type NamedBytes = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes named tensors as a safetensors file.
fn write_safetensors(path: &Path, tensors: &[NamedBytes]) -> std::io::Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view =
                TensorView::new(*dtype, shape.clone(), bytes).map_err(std::io::Error::other)?;
            Ok((name.clone(), view))
        })
        .collect::<std::io::Result<_>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, Normalization};
    use crate::model::ModelDims;

    #[test]
    fn parameter_names_are_transformer_lens_state_dict_keys() {
        let dims = ModelDims {
            n_layers: 2,
            d_model: 8,
            n_heads: 2,
            d_head: 4,
            d_mlp: Some(16),
            d_vocab: 5,
            d_vocab_out: 4,
            n_ctx: 3,
            act_fn: Activation::Relu,
            normalization: Normalization::Ln,
            attn_only: false,
            init_range: 0.8,
        };
        let model = Transformer::new(&dims, 0, &crate::test_device());
        let params = named_parameters(&model);
        let shape = |name: &str| params.get(name).map(|(s, _)| s.clone());
        assert_eq!(shape("embed.W_E"), Some(vec![5, 8]));
        assert_eq!(shape("pos_embed.W_pos"), Some(vec![3, 8]));
        assert_eq!(shape("blocks.1.attn.W_Q"), Some(vec![2, 8, 4]));
        assert_eq!(shape("blocks.0.attn.W_O"), Some(vec![2, 4, 8]));
        assert_eq!(shape("blocks.0.attn.b_Q"), Some(vec![2, 4]));
        assert_eq!(shape("blocks.0.ln1.w"), Some(vec![8]));
        assert_eq!(shape("blocks.0.mlp.W_in"), Some(vec![8, 16]));
        assert_eq!(shape("ln_final.b"), Some(vec![8]));
        assert_eq!(shape("unembed.W_U"), Some(vec![8, 4]));
        assert_eq!(
            params.len(),
            2 + 2 * (8 + 4 + 4) + 2 + 2,
            "{:?}",
            params.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_model_rebuilt_from_its_named_parameters_is_the_same_model() {
        let config = crate::config::Config::parse(include_str!("../../examples/ci.toml")).unwrap();
        let task = crate::tasks::ModularAddition::new(5, 0.5, 0);
        let dims = ModelDims::new(&config, &task);
        let device = crate::test_device();
        let (trained, fresh) = (
            Transformer::new(&dims, 1, &device),
            Transformer::new(&dims, 2, &device),
        );
        let params: BTreeMap<String, HostArray> = named_parameters(&trained)
            .into_iter()
            .map(|(name, (shape, data))| (name, HostArray { shape, data }))
            .collect();
        let rebuilt = with_parameters(fresh, &params, &device).unwrap();
        assert_eq!(named_parameters(&rebuilt), named_parameters(&trained));
        // A snapshot missing a parameter is an error naming it.
        let mut partial = params.clone();
        partial.remove("unembed.W_U");
        let error = with_parameters(rebuilt, &partial, &device).unwrap_err();
        assert!(error.to_string().contains("`unembed.W_U`"), "{error}");
    }
}
