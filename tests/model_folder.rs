//! Model folders end to end on the CPU backend: defaults read from the folder, tokenizer golden
//! ids, truncation, prompts, sharded and half-precision checkpoints, and every bad-input error.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::backend::Flex;
use common::{assert_close, fixture, Expected};
use qzhou_core::prompts::{format_query, DEFAULT_INSTRUCTION};
use qzhou_core::{
    AttentionMode, EmbedOptions, Embedder, LoadOptions, Pooling, PromptStyle, QzhouError,
    TextTokenizer, Truncation,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = Flex;

fn dev() -> burn::backend::flex::FlexDevice {
    Default::default()
}

fn load_dir(dir: &Path) -> qzhou_core::Result<Embedder<B>> {
    Embedder::<B>::from_dir(dir, &dev(), &LoadOptions::default())
}

/// A copy of a fixture folder we may modify.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Rewrite `model.safetensors` of `dir` through `edit` (name -> (dtype, shape, bytes)).
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    write_safetensors(&path, &map);
}

fn write_safetensors(path: &Path, map: &HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn folder_defaults_follow_the_model() {
    let qzhou = load_dir(&fixture("tiny-qwen2")).unwrap();
    assert_eq!(qzhou.attention(), AttentionMode::Bidirectional); // architectures: QZhouModel
    assert_eq!(qzhou.pooling(), Pooling::Mean); // 1_Pooling/config.json
    assert!(qzhou.normalize()); // modules.json lists Normalize
    assert_eq!(qzhou.tokenizer().max_length(), 96); // sentence_bert_config.json
    assert_eq!(qzhou.dim(), 32);
    let qwen3 = load_dir(&fixture("tiny-qwen3")).unwrap();
    assert_eq!(qwen3.attention(), AttentionMode::Causal);
    assert_eq!(qwen3.pooling(), Pooling::LastToken);
}

#[test]
fn embed_from_text_equals_the_reference() {
    // The full text path (tokenizer, truncation to 96 tokens, batching) against transformers.
    let expected = Expected::load();
    let texts = expected.texts();
    let e = load_dir(&fixture("tiny-qwen2")).unwrap();
    let got = e.embed(&texts, &EmbedOptions::document()).unwrap();
    assert_close(
        &got,
        &expected.embeddings("tiny-qwen2", "bidirectional-mean"),
        0.99999,
        1e-5,
        "text path",
    );
    assert_eq!(
        e.tokenize(&texts, &EmbedOptions::document()).unwrap(),
        expected.token_ids("tiny-qwen2")
    );
}

#[test]
fn golden_token_ids_of_the_real_qwen_tokenizer() {
    let golden: [(&str, &[u32]); 7] = [
        ("Hello, world!", &[9707, 11, 1879, 0]),
        ("你好，世界！今天天气很好。", &[108386, 3837, 99489, 6313, 100644, 104307, 101243, 1773]),
        (
            "  leading spaces\tand tabs\r\n\nnewlines 12345 3.14159",
            &[220, 6388, 12621, 52477, 22398, 80823, 931, 7969, 220, 16, 17, 18, 19, 20, 220, 18, 13, 16, 19, 16, 20, 24],
        ),
        ("<|endoftext|><|im_start|>user\nhi<|im_end|>", &[151643, 151644, 872, 198, 6023, 151645]),
        (
            "naïve café Ünïcödé 😀 🇫🇷",
            &[3376, 37572, 586, 51950, 30512, 77, 37572, 66, 2956, 128505, 90316, 11162, 229, 104, 145070],
        ),
        ("don't I'll we're HELLO'S", &[15007, 944, 358, 3278, 582, 2299, 37657, 1593, 13272]),
        (
            "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: what is the capital of France?",
            &[641, 1235, 25, 16246, 264, 3482, 2711, 3239, 11, 17179, 9760, 46769, 429, 4226, 279, 3239, 198, 2859, 25, 1128, 374, 279, 6722, 315, 9625, 30],
        ),
    ];
    for model in ["tiny-qwen2", "tiny-qwen3"] {
        let bytes = std::fs::read(fixture(model).join("tokenizer.json")).unwrap();
        let tok = TextTokenizer::from_json(&bytes, 1024, Truncation::Truncate).unwrap();
        for (text, ids) in golden {
            assert_eq!(tok.encode(&[text]).unwrap()[0], ids, "{model}: {text:?}");
        }
        let a = tok.encode(&["Query:what"]).unwrap().remove(0);
        let b = tok.encode(&["Query: what"]).unwrap().remove(0);
        assert_eq!(&a[a.len() - 3..], &[2859, 25, 12555]);
        assert_eq!(&b[b.len() - 3..], &[2859, 25, 1128]);
    }
    // Qwen2.5 lacks the four added tokens above 151664 that Qwen3 has.
    let q25 = TextTokenizer::from_json(
        &std::fs::read(fixture("tiny-qwen2/tokenizer.json")).unwrap(),
        64,
        Truncation::Truncate,
    )
    .unwrap();
    let q3 = TextTokenizer::from_json(
        &std::fs::read(fixture("tiny-qwen3/tokenizer.json")).unwrap(),
        64,
        Truncation::Truncate,
    )
    .unwrap();
    assert_eq!(q3.encode(&["<think>"]).unwrap()[0], vec![151667]);
    assert_ne!(q25.encode(&["<think>"]).unwrap()[0], vec![151667]);
}

#[test]
fn truncation_and_over_long_text() {
    let expected = Expected::load();
    let long = expected.texts().last().unwrap().clone();
    let bytes = std::fs::read(fixture("tiny-qwen2/tokenizer.json")).unwrap();
    let tok = TextTokenizer::from_json(&bytes, 96, Truncation::Truncate).unwrap();
    let ids = tok.encode(&[long.as_str()]).unwrap().remove(0);
    assert_eq!(ids.len(), 96);
    let full = TextTokenizer::from_json(&bytes, 100_000, Truncation::Truncate)
        .unwrap()
        .encode(&[long.as_str()])
        .unwrap()
        .remove(0);
    assert!(full.len() > 96);
    assert_eq!(&full[..96], ids.as_slice()); // truncation keeps the head
    let strict = TextTokenizer::from_json(&bytes, 96, Truncation::Error).unwrap();
    match strict.encode(&["short", long.as_str()]) {
        Err(QzhouError::TextTooLong {
            index: 1,
            tokens,
            max_length: 96,
        }) => assert_eq!(tokens, full.len()),
        other => panic!("expected TextTooLong, got {other:?}"),
    }
    // Through the embedder, with a max length override.
    let opts = LoadOptions {
        max_length: Some(8),
        truncation: Truncation::Error,
        ..LoadOptions::default()
    };
    let e = Embedder::<B>::from_dir(fixture("tiny-qwen2"), &dev(), &opts).unwrap();
    let err = e
        .embed(
            &["one two three four five six seven eight nine ten"],
            &EmbedOptions::document(),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("text #0 has 10 tokens, more than the maximum length 8"),
        "{err}"
    );
}

#[test]
fn prompts_are_the_exact_strings() {
    let e = load_dir(&fixture("tiny-qwen2")).unwrap();
    // Folder's query prompt (config_sentence_transformers.json) for plain queries.
    assert_eq!(
        e.prefix(&EmbedOptions::query()).unwrap(),
        "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "
    );
    assert_eq!(e.prefix(&EmbedOptions::document()).unwrap(), "");
    let fiqa = EmbedOptions::query().with_task("FiQA2018");
    assert_eq!(
        e.prefix(&fiqa).unwrap(),
        "Instruct: Given a financial question, retrieve user replies that best answer the question\nQuery: "
    );
    // Query-only task: documents stay raw. All-inputs task: documents get it too.
    assert_eq!(
        e.prefix(&EmbedOptions::document().with_task("FiQA2018"))
            .unwrap(),
        ""
    );
    assert_eq!(
        e.prefix(&EmbedOptions::document().with_task("STSBenchmark"))
            .unwrap(),
        "Instruct: Retrieve semantically similar text\nQuery: "
    );
    let nospace = EmbedOptions {
        prompt_style: PromptStyle::NoSpace,
        ..EmbedOptions::query().with_instruction("Find it")
    };
    assert_eq!(e.prefix(&nospace).unwrap(), "Instruct: Find it\nQuery:");
    // The query template embedded via options equals embedding the formatted string directly.
    let via_options = e
        .embed(
            &["what is the capital of France?"],
            &EmbedOptions::query().with_instruction(DEFAULT_INSTRUCTION),
        )
        .unwrap();
    let direct = e
        .embed(
            &[format_query(
                DEFAULT_INSTRUCTION,
                "what is the capital of France?",
                PromptStyle::Space,
            )],
            &EmbedOptions::document(),
        )
        .unwrap();
    assert_eq!(via_options, direct);
    let err = e
        .embed(&["x"], &EmbedOptions::query().with_task("NoSuchTask"))
        .unwrap_err();
    assert!(matches!(err, QzhouError::UnknownTask { .. }), "{err}");
}

#[test]
fn sharded_and_half_precision_checkpoints_load_the_same_model() {
    let texts = Expected::load().texts();
    let reference = load_dir(&fixture("tiny-qwen2"))
        .unwrap()
        .embed(&texts, &EmbedOptions::document())
        .unwrap();

    // Shard the fp32 file in two, with the `model.` prefix, plus an `lm_head` that must be ignored.
    let tmp = copy_fixture("tiny-qwen2");
    let bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut shards: [HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (k, (name, view)) in st.tensors().into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", k % 2 + 1);
        weight_map.insert(format!("model.{name}"), file.into());
        shards[k % 2].insert(
            format!("model.{name}"),
            (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
        );
    }
    shards[0].insert(
        "lm_head.weight".into(),
        (Dtype::F32, vec![2, 32], vec![0u8; 2 * 32 * 4]),
    );
    for (i, shard) in shards.iter().enumerate() {
        write_safetensors(
            &tmp.path()
                .join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            shard,
        );
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let sharded = load_dir(tmp.path())
        .unwrap()
        .embed(&texts, &EmbedOptions::document())
        .unwrap();
    assert_eq!(sharded, reference);

    // The same weights stored as f16: equal up to f16 rounding of the weights.
    let tmp16 = copy_fixture("tiny-qwen2");
    edit_weights(tmp16.path(), |map| {
        for (dtype, _, data) in map.values_mut() {
            *data = data
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                })
                .collect();
            *dtype = Dtype::F16;
        }
    });
    let f16 = load_dir(tmp16.path())
        .unwrap()
        .embed(&texts, &EmbedOptions::document())
        .unwrap();
    for (a, b) in f16.iter().zip(&reference) {
        assert!(
            common::cosine(a, b) > 0.999,
            "f16 weights drifted: cos {}",
            common::cosine(a, b)
        );
    }
}

fn err_of(dir: &Path) -> String {
    match load_dir(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_model_folders_give_one_clear_error() {
    // Missing folder / files.
    assert!(err_of(Path::new("/nonexistent/model"))
        .contains("/nonexistent/model (model folder): file not found"));
    let tmp = copy_fixture("tiny-qwen2");
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    assert!(err_of(tmp.path()).ends_with("tokenizer.json: file not found"));
    let tmp = copy_fixture("tiny-qwen2");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    assert!(err_of(tmp.path()).contains("model.safetensors"));

    // Malformed config JSON, unknown model type, unsupported rope scaling.
    let tmp = copy_fixture("tiny-qwen2");
    std::fs::write(tmp.path().join("config.json"), "{\"model_type\": ").unwrap();
    assert!(err_of(tmp.path()).starts_with("config.json:"));
    let edit_config = |f: &dyn Fn(&mut serde_json::Value)| {
        let tmp = copy_fixture("tiny-qwen2");
        let p = tmp.path().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
        err_of(tmp.path())
    };
    assert!(
        edit_config(&|v| v["model_type"] = "bert".into()).contains("unsupported model_type `bert`")
    );
    assert!(
        edit_config(&|v| v["rope_scaling"] = serde_json::json!({"rope_type": "yarn"}))
            .contains("yarn")
    );

    // Config that disagrees with the weights: every problem listed in one error.
    let e = edit_config(&|v| v["num_hidden_layers"] = 3.into());
    assert!(
        e.contains("missing [layers.2.input_layernorm.weight"),
        "{e}"
    );
    let e = edit_config(&|v| v["intermediate_size"] = 48.into());
    assert!(
        e.contains(
            "wrong shape [layers.0.mlp.gate_proj.weight (expected [48, 32], found [64, 32])"
        ),
        "{e}"
    );

    // Weights: missing, unexpected, mis-shaped and bad dtype together.
    let tmp = copy_fixture("tiny-qwen2");
    edit_weights(tmp.path(), |m| {
        m.remove("layers.1.self_attn.q_proj.bias");
        m.insert(
            "layers.0.extra.weight".into(),
            (Dtype::F32, vec![1], vec![0; 4]),
        );
        let norm = m.get_mut("norm.weight").unwrap();
        norm.1 = vec![16];
        norm.2.truncate(16 * 4);
        let emb = m.get_mut("layers.0.input_layernorm.weight").unwrap();
        emb.0 = Dtype::I32;
    });
    let e = err_of(tmp.path());
    for part in [
        "missing [layers.1.self_attn.q_proj.bias]",
        "unexpected [layers.0.extra.weight]",
        "wrong shape [norm.weight (expected [32], found [16])]",
        "unsupported dtype [layers.0.input_layernorm.weight (I32)]",
    ] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }

    // Truncated weights file.
    let tmp = copy_fixture("tiny-qwen2");
    let p = tmp.path().join("model.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let e = err_of(tmp.path());
    assert!(
        e.contains("model.safetensors: not a valid safetensors file"),
        "{e}"
    );

    // Malformed tokenizer and sentence-transformers files.
    let tmp = copy_fixture("tiny-qwen2");
    std::fs::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
    assert!(err_of(tmp.path()).starts_with("tokenizer:"));
    let tmp = copy_fixture("tiny-qwen2");
    std::fs::write(
        tmp.path().join("1_Pooling/config.json"),
        "{\"pooling_mode_max_tokens\": true}",
    )
    .unwrap();
    assert!(err_of(tmp.path()).contains("pooling_mode_max_tokens"));
}

#[test]
fn bad_texts_and_nan_weights_are_errors() {
    let e = load_dir(&fixture("tiny-qwen2")).unwrap();
    match e.embed(&["fine", "  "], &EmbedOptions::query()) {
        Err(QzhouError::EmptyText { index: 1 }) => {}
        other => panic!("expected EmptyText, got {other:?}"),
    }
    assert!(matches!(
        e.embed_token_ids(&[vec![]]),
        Err(QzhouError::EmptyText { index: 0 })
    ));
    // An empty input list is fine and gives no vectors.
    assert!(e
        .embed(&Vec::<String>::new(), &EmbedOptions::query())
        .unwrap()
        .is_empty());

    let tmp = copy_fixture("tiny-qwen2");
    edit_weights(tmp.path(), |m| {
        let norm = m.get_mut("norm.weight").unwrap();
        norm.2[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let broken = load_dir(tmp.path()).unwrap();
    let err = broken
        .embed(&["hello"], &EmbedOptions::document())
        .unwrap_err();
    assert_eq!(err.to_string(), "embedding #0 contains NaN or infinity (broken weights, or a dtype this backend cannot compute)");

    for bad in [
        LoadOptions {
            batch_tokens: 0,
            ..Default::default()
        },
        LoadOptions {
            max_length: Some(0),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            Embedder::<B>::from_dir(fixture("tiny-qwen2"), &dev(), &bad),
            Err(QzhouError::InvalidOption(_))
        ));
    }
    let too_long = LoadOptions {
        max_length: Some(100_000),
        ..Default::default()
    };
    let e = Embedder::<B>::from_dir(fixture("tiny-qwen2"), &dev(), &too_long)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("max_position_embeddings 512"), "{e}");
}
