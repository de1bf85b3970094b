//! The trace as one self-contained HTML page: a lane per node with its role and term over
//! time and its commit index, every message as an arrow from send to delivery (dropped ones
//! crossed out, colored by kind, filterable), crashes and partitions shaded, the client
//! operations beneath with the checker's verdict. The page (`timeline.html`, next to this file)
//! carries the JSON Lines trace inside a script element and draws it with inline JavaScript
//! and SVG: no network access. Zoomed out, it draws the density of messages instead of each
//! arrow, so a run of hundreds of thousands of events stays responsive.

const TEMPLATE: &str = include_str!("timeline.html");

/// The HTML page showing the JSON Lines trace `jsonl`, titled `title`.
pub fn render(jsonl: &str, title: &str) -> String {
    let title = html_escape(title);
    // Inside a script element only `</` could end it early; in JSON it can only occur within
    // a string, where `<\/` means the same.
    let trace = jsonl.replace("</", "<\\/");
    TEMPLATE
        .replace("{{TITLE}}", &title)
        .replacen("{{TRACE}}", &trace, 1)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_cannot_end_its_script_element() {
        let page = render("{\"ev\":\"x\",\"key\":\"</script><b>\"}\n", "a <test>");
        assert!(page.contains("a &lt;test&gt;"));
        assert!(page.contains(r#"{"ev":"x","key":"<\/script><b>"}"#));
        assert_eq!(page.matches("</script>").count(), 2);
    }
}
