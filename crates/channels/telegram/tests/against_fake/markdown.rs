use nanoclaw_channel_telegram::format::to_markdown_v2;
use nanoclaw_test_support::platforms::telegram::parse_markdown_v2;

/// Whatever the agent writes, the conversion is MarkdownV2 the (strict) fake parses, so
/// the plain-text fallback stays the exception.
#[test]
fn awkward_markdown_still_converts_to_valid_markdown_v2() {
    let inputs = [
        "*a **b* c**",
        "_a __b_ c__",
        "[a](b",
        "[a]",
        "``` ```",
        "\\",
        "a\\",
        "~~~",
        "||x||",
        "> > x",
        "#",
        "**",
        "`",
        "[]()",
        "![]()",
        "![x](y) and [**b** _i_](https://x.y/?q=(1))",
        "__init__.py and x_y_z*w*",
        "1. 2. 3. - + = | { } . !",
        "**bold `code**`",
        "```\nunclosed `tick` and \\ slash",
        "```py\n```\n**after**",
        "emoji 😀 *ok* 🎉_x_",
        "a\n\n\n**b**\n- c\n  - d\n> e",
        "*x*y*z*",
        "~~a~~b~~",
        "`a``b`",
        "[link with ] bracket](https://e.x)",
    ];
    for input in inputs {
        let converted = to_markdown_v2(input);
        if let Err(e) = parse_markdown_v2(&converted) {
            panic!("{input:?} became {converted:?}, refused: {e}");
        }
    }
}

#[test]
fn the_text_shown_is_the_text_without_markup() {
    let shown = parse_markdown_v2(&to_markdown_v2(
        "## Plan\n1. **Fetch** the `data.csv`\n2. Run `make -j2`!",
    ))
    .unwrap();
    assert_eq!(shown, "Plan\n1. Fetch the data.csv\n2. Run make -j2!");
}
