//! The synthesis constraints (`qzhou_core::synthesis`) on real sentence pairs from
//! `../shared/data` (STS-B English, its Chinese translation, the Chinese retrieval triples).
//! Expected figures follow from the stated measure: units are words (English) or characters
//! (Chinese); difference = Levenshtein distance over units / the longer length.

use qzhou_core::synthesis::text::{difference, length_change, script, Script};
use qzhou_core::synthesis::{
    check_augment, check_hardneg, check_paraphrase, Constraints, Pair, Rejection, Seen, Triple,
};

/// A data file's text, for asserting the test sentences are really in it.
fn data(path: &str) -> String {
    let full = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(path);
    let file = std::fs::File::open(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    let mut text = String::new();
    if path.ends_with(".gz") {
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(file), &mut text).unwrap();
    } else {
        std::io::Read::read_to_string(&mut { file }, &mut text).unwrap();
    }
    text
}

fn pair(query: &str, pos: &str) -> Pair {
    Pair {
        query: query.into(),
        pos: pos.into(),
    }
}

#[test]
fn measures_on_real_pairs() {
    let en = data("sts-b-en/stsbenchmark.tsv.gz");
    let zh = data("sts-b-zh/STS-B.train.data");
    for s in [
        "A plane is taking off.\tAn air plane is taking off.",
        "A man is playing a large flute.\tA man is playing a flute.",
    ] {
        assert!(en.contains(s), "{s}");
    }
    assert!(zh.contains("一架飞机要起飞了。\t一架飞机正在起飞。"));
    // [a plane is taking off] -> [an air plane is taking off]: a->an, +air = 2 edits of 6.
    assert!(
        (difference("A plane is taking off.", "An air plane is taking off.") - 2.0 / 6.0).abs()
            < 1e-12
    );
    assert!(
        (length_change("A plane is taking off.", "An air plane is taking off.") - 0.2).abs()
            < 1e-12
    );
    // Dropping "large": 1 edit of 7 words.
    assert!(
        (difference(
            "A man is playing a large flute.",
            "A man is playing a flute."
        ) - 1.0 / 7.0)
            .abs()
            < 1e-12
    );
    // 要起飞了 -> 正在起飞: 3 edits of 8 characters.
    assert!((difference("一架飞机要起飞了。", "一架飞机正在起飞。") - 3.0 / 8.0).abs() < 1e-12);
    assert_eq!(script("一架飞机要起飞了。"), Script::Chinese);
    assert_eq!(script("A plane is taking off."), Script::Latin);
}

#[test]
fn paraphrase_rules() {
    let c = Constraints::default();
    let source = pair("A plane is taking off.", "A man is playing a large flute.");
    let mut seen = Seen::new([source.query.as_str(), source.pos.as_str()]);
    // 20 % longer query: over the ±15 % limit.
    let longer = pair(
        "An air plane is taking off.",
        "A flute is being played by a man.",
    );
    assert!(matches!(
        check_paraphrase(&c, &source, &longer, &mut seen),
        Err(Rejection::Length { field: "query", .. })
    ));
    // One word of seven dropped: 14 % different, not the 30 % a sentence needs.
    let close = pair(
        "An aircraft departs right now.",
        "A man is playing a flute.",
    );
    assert!(matches!(
        check_paraphrase(&c, &source, &close, &mut seen),
        Err(Rejection::TooSimilar { field: "pos", .. })
    ));
    // Chinese for English: wrong language.
    let chinese = pair("一架飞机要起飞了。", "A flute is played by one man.");
    assert!(matches!(
        check_paraphrase(&c, &source, &chinese, &mut seen),
        Err(Rejection::Language {
            field: "query",
            got: Script::Chinese,
            want: Script::Latin
        })
    ));
    let good = pair(
        "An aircraft departs right now.",
        "A flute is played by one man.",
    );
    check_paraphrase(&c, &source, &good, &mut seen).unwrap();
    // The same output again is a duplicate.
    assert!(matches!(
        check_paraphrase(&c, &source, &good, &mut seen),
        Err(Rejection::Duplicate { .. })
    ));
    // Paragraphs: two adjacent source sentences kept is refused even when the rest changed.
    let para = "一架飞机要起飞了。一个男人在吹一支大笛子。那人在弹钢琴。";
    let source = pair("飞机什么时候起飞？", para);
    let mut seen = Seen::new([source.query.as_str(), source.pos.as_str()]);
    let keeps = pair(
        "飞机何时会起飞呢",
        "航班马上就要离开。一架飞机要起飞了。一个男人在吹一支大笛子。",
    );
    assert!(matches!(
        check_paraphrase(&c, &source, &keeps, &mut seen),
        Err(Rejection::AdjacentSentences { field: "pos", .. })
    ));
}

#[test]
fn augment_and_hardneg_rules() {
    let c = Constraints::default();
    let zh = data("retrieval-zh/bge_finetune_data.jsonl");
    assert!(zh.contains("\"query\": \"一架飞机要起飞了。\", \"pos\": [\"一架飞机正在起飞。\"]"));
    assert!(zh.contains("一架飞机正降落在跑道上。"));
    let source = pair("一架飞机要起飞了。", "一架飞机正在起飞。");
    // The triples file's own negative "一架飞机正降落在跑道上。" (10 characters vs 8: +25 %)
    // is too long for the ±20 % rule.
    let mut seen = Seen::new([source.query.as_str(), source.pos.as_str()]);
    assert!(matches!(
        check_hardneg(&c, &source, "一架飞机正降落在跑道上。", &mut seen),
        Err(Rejection::Length { field: "neg", .. })
    ));
    // "一架飞机在空中飞行。" (also in the file): 8 characters, 4 edits from the positive.
    assert!(zh.contains("一架飞机在空中飞行。"));
    check_hardneg(&c, &source, "一架飞机在空中飞行。", &mut seen).unwrap();
    assert!(matches!(
        check_hardneg(&c, &source, "一架飞机正在起飞。", &mut Seen::default()),
        Err(Rejection::Copy { of: "pos", .. })
    ));
    assert!(matches!(
        check_hardneg(&c, &source, "A plane is in the sky.", &mut Seen::default()),
        Err(Rejection::Language { .. })
    ));
    // Augment: a reworded query is refused; a shifted one with its own pos / neg passes.
    let reworded = Triple {
        query: "一架飞机要起飞啦。".into(),
        pos: "航班正在跑道滑行。".into(),
        neg: "一架飞机在空中飞行。".into(),
    };
    assert!(matches!(
        check_augment(&c, &source, &reworded, &mut Seen::default()),
        Err(Rejection::TooSimilar { field: "query", .. })
    ));
    let shifted = Triple {
        query: "这架客机几点降落？".into(),
        pos: "客机将在六点降落。".into(),
        neg: "客机在六点起飞了。".into(),
    };
    check_augment(&c, &source, &shifted, &mut Seen::default()).unwrap();
}
