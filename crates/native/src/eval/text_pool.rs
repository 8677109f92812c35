//! Distinct texts with stable indices: the corpus pooled from records' positives and
//! negatives (eval triples, the trainer's held-out set, `qzhou mine`).

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct TextPool {
    index: HashMap<String, usize>,
    texts: Vec<String>,
}

impl TextPool {
    /// The index of `text`, added at the end if new.
    pub fn id(&mut self, text: &str) -> usize {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        self.texts.push(text.to_string());
        self.index.insert(text.to_string(), self.texts.len() - 1);
        self.texts.len() - 1
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// The texts in order of first appearance.
    pub fn into_texts(self) -> Vec<String> {
        self.texts
    }
}
