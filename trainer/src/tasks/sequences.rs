//! `sequences`: a task defined by a dataset directory instead of Rust code (see [`super::dataset`] and
//! `docs/tasks.md`). Training draws minibatches from the train split exactly as the built-in finite tasks do
//! (a seeded shuffled order per epoch), so a resumed run and a replay see the same batches.

use super::dataset::{Dataset, Key};
use super::{DataCursor, EpochOrder, Examples, Labeled, Split, Task, finite_cursor};

pub struct Sequences {
    data: Dataset,
    orders: EpochOrder,
}

impl Sequences {
    pub fn new(data: Dataset, seed: u64) -> Self {
        let n = data
            .split(Split::Train)
            .expect("a loaded dataset has a train split")
            .n;
        Self {
            data,
            orders: EpochOrder::new(n, seed),
        }
    }

    fn train(&self) -> &Examples {
        self.data
            .split(Split::Train)
            .expect("a loaded dataset has a train split")
    }

    /// A column of `examples` that the dataset's validation guaranteed.
    fn column<'e>(examples: &'e Examples, name: &str) -> &'e [u32] {
        examples
            .columns
            .get(name)
            .map(Vec::as_slice)
            .expect("examples of a dataset carry the columns its manifest names")
    }
}

impl Task for Sequences {
    fn name(&self) -> &str {
        &self.data.manifest.name
    }
    fn d_vocab(&self) -> usize {
        self.data.manifest.vocab
    }
    fn d_vocab_out(&self) -> usize {
        self.data.manifest.vocab_out()
    }
    fn seq_len(&self) -> usize {
        self.data.manifest.seq_len
    }
    fn answer_positions(&self) -> &[usize] {
        &self.data.answer_positions
    }
    fn split(&self, split: Split) -> Option<Examples> {
        self.data.split(split).cloned()
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        let train = self.train();
        match batch_size {
            None => train.clone(),
            Some(batch) => train.select(&self.orders.minibatch(batch, step)),
        }
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        finite_cursor(self.train().n, batch_size, step)
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        self.data
            .keys
            .iter()
            .map(|(name, key)| Labeled {
                name: name.clone(),
                n_classes: self.seq_len(),
                values: match key {
                    Key::Fixed(pos) => vec![*pos as u32; examples.n],
                    Key::Column(column) => Self::column(examples, column).to_vec(),
                },
            })
            .collect()
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        self.data
            .manifest
            .targets
            .iter()
            .map(|(name, target)| Labeled {
                name: name.clone(),
                n_classes: target.classes,
                values: Self::column(examples, target.column.as_deref().unwrap_or(name)).to_vec(),
            })
            .collect()
    }
    fn control_types(&self, examples: &Examples) -> Vec<Labeled> {
        self.data
            .manifest
            .targets
            .iter()
            .filter_map(|(name, target)| {
                let column = target.control.as_deref().filter(|c| *c != "token")?;
                Some(Labeled {
                    name: name.clone(),
                    n_classes: 0,
                    values: Self::column(examples, column).to_vec(),
                })
            })
            .collect()
    }
    fn corrupted_key(&self) -> Option<&str> {
        self.data
            .manifest
            .corruption
            .as_ref()
            .map(|c| c.key.as_str())
    }
    fn attainable_accuracy(&self) -> Option<f64> {
        self.data.manifest.attainable_accuracy
    }
    fn progress_measures(&self) -> Vec<super::ProgressMeasure> {
        self.data.manifest.progress.clone()
    }
    fn head_detectors(&self) -> Vec<super::HeadDetector> {
        self.data.manifest.head_detectors.clone()
    }
    fn dataset_sha256(&self) -> Option<&str> {
        Some(&self.data.sha256)
    }
}
