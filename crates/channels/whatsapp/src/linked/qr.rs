//! The pairing QR code as text for the terminal: two modules per character cell (`▀`,
//! `▄`, `█`, space), with the quiet zone. Light modules are drawn, dark ones left as the
//! background, so the code reads right on the usual dark terminal.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// `payload` as a QR code in text; an error when it does not fit in a QR code.
pub fn render(payload: &str) -> Result<String, String> {
    let code = QrCode::new(payload.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrcode::Color;

    /// Reads the rendering back into modules: `true` for a dark module.
    fn modules(text: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in text.lines() {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for c in line.chars() {
                // Drawn = light module; blank = dark.
                let (t, b) = match c {
                    '█' => (false, false),
                    '▀' => (false, true),
                    '▄' => (true, false),
                    ' ' => (true, true),
                    other => panic!("unexpected character {other:?}"),
                };
                top.push(t);
                bottom.push(b);
            }
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    #[test]
    fn the_rendering_holds_exactly_the_code_modules() {
        let payload = "2@Xb3k9LmQ0,aGVsbG8gd29ybGQ=,c2Vzc2lvbg==,bm9pc2U=";
        let text = render(payload).unwrap();
        let code = QrCode::new(payload.as_bytes()).unwrap();
        let width = code.width();
        let colors = code.to_colors();
        let rows = modules(&text);
        // Four modules of quiet zone on each side.
        let side = width + 8;
        assert!(rows.len() >= side, "{} rows for {side}", rows.len());
        for row in &rows {
            assert_eq!(row.len(), side);
        }
        for y in 0..side {
            for x in 0..side {
                let inside = (4..width + 4).contains(&x) && (4..width + 4).contains(&y);
                let dark = inside && colors[(y - 4) * width + (x - 4)] == Color::Dark;
                assert_eq!(rows[y][x], dark, "module ({x}, {y})");
            }
        }
        assert_ne!(render("another payload").unwrap(), text);
    }
}
