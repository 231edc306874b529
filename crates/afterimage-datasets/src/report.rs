//! The analysis report as one self-contained HTML page: inline CSS and hand-written
//! SVG charts, no script and no network, so it opens anywhere and can be mailed.
//!
//! Every piece of dialog text, persona and document id is untrusted and goes through
//! [`escape`].

use std::fmt::Write;

use afterimage_core::Role;

use crate::diversity::{EMBEDDING_ABOUT, LOOPS_ABOUT, SCOPE_METRICS, Sampled};
use crate::stats::{Analysis, Bucket, Diversity, LengthStats, TextDiversity};

/// The `id`s of the report's sections, in page order (tests check each is present).
pub const SECTIONS: [&str; 10] = [
    "summary",
    "turns",
    "lengths",
    "personas",
    "documents",
    "judge",
    "scores",
    "diversity",
    "lowest",
    "notes",
];

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#1d2430;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;border-bottom:2px solid #dde3ec;padding-bottom:4px;margin-top:36px}
.muted{color:#5b6678}.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#f3f6fa;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:22px}table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #e6eaf0;text-align:left;vertical-align:top}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:20px}.dialog{border:1px solid #dde3ec;border-radius:8px;padding:10px 14px;margin:12px 0}
.msg{margin:6px 0;padding:6px 10px;border-radius:6px;white-space:pre-wrap;word-wrap:break-word}.user{background:#eef4ff}.assistant{background:#f1f8ee}
.tool{background:#fff6e5}.system{background:#f4f0fa}.role{font-weight:600;font-size:12px;text-transform:uppercase;color:#5b6678;display:block}
svg{max-width:100%;height:auto}svg text{font:12px system-ui,sans-serif;fill:#1d2430}";

/// Renders the whole page for `analysis` of the dataset named `title`.
pub fn render_html(analysis: &Analysis, title: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>afterimage report: {t}</title><style>{STYLE}</style></head><body><h1>Dataset report</h1><p class=\"muted\">{t}</p>",
        t = escape(title)
    );
    summary(&mut h, analysis);
    turns(&mut h, analysis);
    lengths(&mut h, analysis);
    personas(&mut h, analysis);
    documents(&mut h, analysis);
    judge(&mut h, analysis);
    scores(&mut h, analysis);
    diversity(&mut h, analysis);
    lowest(&mut h, analysis);
    notes(&mut h);
    h.push_str("</body></html>\n");
    h
}

fn section(h: &mut String, id: &str, title: &str) {
    let _ = write!(h, "<section id=\"{id}\"><h2>{title}</h2>");
}

fn card(h: &mut String, label: &str, value: &str) {
    let _ = write!(
        h,
        "<div class=\"card\"><b>{}</b><span class=\"muted\">{}</span></div>",
        escape(value),
        escape(label)
    );
}

fn summary(h: &mut String, a: &Analysis) {
    let s = &a.summary;
    section(h, "summary", "Summary");
    h.push_str("<div class=\"cards\">");
    card(h, "rows", &s.rows.to_string());
    card(h, "exchanges", &s.turns.to_string());
    card(h, "mean exchanges per row", &format!("{:.2}", s.mean_turns));
    card(h, "messages", &s.messages.to_string());
    card(h, "input tokens", &s.input_tokens.to_string());
    card(h, "output tokens", &s.output_tokens.to_string());
    card(
        h,
        "cost",
        &s.cost_usd
            .map_or_else(|| "unknown".to_owned(), |c| format!("${c:.4}")),
    );
    card(
        h,
        "rows with tool calls",
        &s.rows_with_tool_calls.to_string(),
    );
    card(h, "regenerated rows", &s.regenerated_rows.to_string());
    h.push_str("</div>");
    let _ = write!(
        h,
        "<p class=\"muted\">Token counts come from {} of {} rows that record usage; the run's cost, failed attempts included, is in its ledger (afterimage stats, or the summary of generate).</p>",
        s.rows_with_usage, s.rows
    );
    if !s.models.is_empty() {
        h.push_str("<p>Respondent models: ");
        let list: Vec<String> = s
            .models
            .iter()
            .map(|b| format!("{} ({})", escape(&b.label), b.count))
            .collect();
        h.push_str(&list.join(", "));
        h.push_str("</p>");
    }
    h.push_str("<h3>Failures by cause</h3>");
    match &s.failures {
        Some(failures) if failures.is_empty() => h.push_str("<p>No failed dialogs.</p>"),
        Some(failures) => {
            let bars: Vec<Bucket> = failures
                .iter()
                .map(|(k, v)| Bucket {
                    label: k.clone(),
                    count: *v,
                })
                .collect();
            bar_chart(h, &bars);
        }
        None => {
            let _ = write!(
                h,
                "<p class=\"muted\">No run record was given, so failed dialogs are unknown (rows hold only dialogs that succeeded). The rows do show {} regenerated dialog(s) and {} extra attempt(s).</p>",
                s.regenerated_rows, s.extra_attempts
            );
        }
    }
    h.push_str("</section>");
}

fn turns(h: &mut String, a: &Analysis) {
    section(h, "turns", "Exchanges per dialog");
    bar_chart(h, &a.turns);
    h.push_str("</section>");
}

fn length_block(h: &mut String, name: &str, l: &LengthStats) {
    let _ = write!(
        h,
        "<div><h3>{name}</h3><p class=\"muted\">{} messages; mean {:.0}, median {}, longest {} characters</p>",
        l.messages, l.mean, l.median, l.max
    );
    bar_chart(h, &l.histogram);
    h.push_str("</div>");
}

fn lengths(h: &mut String, a: &Analysis) {
    section(h, "lengths", "Message lengths (characters)");
    h.push_str("<div class=\"grid\">");
    length_block(h, "User", &a.lengths.user);
    length_block(h, "Assistant", &a.lengths.assistant);
    h.push_str("</div></section>");
}

fn personas(h: &mut String, a: &Analysis) {
    let p = &a.personas;
    section(h, "personas", "Personas");
    if p.rows_with_persona == 0 {
        h.push_str("<p class=\"muted\">No row names a persona.</p>");
    } else {
        let _ = write!(
            h,
            "<p>{} rows with a persona, {} distinct.</p><div class=\"grid\"><div><h3>Most used</h3>",
            p.rows_with_persona, p.distinct
        );
        bar_chart(h, &p.top);
        h.push_str("</div><div><h3>Generation depth</h3>");
        bar_chart(h, &p.depth);
        h.push_str("</div></div>");
    }
    h.push_str("</section>");
}

fn documents(h: &mut String, a: &Analysis) {
    let d = &a.documents;
    section(h, "documents", "Document coverage");
    let _ = write!(
        h,
        "<p>{} documents used; {} rows name no document.</p>",
        d.used.len(),
        d.rows_without_document
    );
    bar_chart(h, &d.used);
    match (&d.never_used, d.known) {
        (Some(never), Some(known)) if never.is_empty() => {
            let _ = write!(h, "<p>All {known} known documents were used.</p>");
        }
        (Some(never), Some(known)) => {
            let _ = write!(
                h,
                "<h3>Never used ({} of {known})</h3><ul>",
                never.len()
            );
            for doc in never {
                let _ = write!(h, "<li>{}</li>", escape(doc));
            }
            h.push_str("</ul>");
        }
        _ => h.push_str(
            "<p class=\"muted\">Only documents seen in rows are known; give the document folder (<code>--documents DIR</code>) to list the ones never used.</p>",
        ),
    }
    h.push_str("</section>");
}

fn judge(h: &mut String, a: &Analysis) {
    let j = &a.judge;
    section(h, "judge", "Judge grades and criteria");
    if j.scored_rows == 0 {
        h.push_str("<p class=\"muted\">No row was judged (run with <code>quality.auto_improve: true</code> to judge dialogs).</p>");
    } else {
        let _ = write!(
            h,
            "<p>{} judged rows, mean score {:.3}.</p><div class=\"grid\"><div><h3>Grades</h3>",
            j.scored_rows,
            j.mean_score.unwrap_or(0.0)
        );
        bar_chart(h, &j.grades);
        h.push_str("</div><div><h3>Criteria</h3><table><tr><th>criterion</th><th>rows</th><th>mean</th><th>lowest</th></tr>");
        for c in &j.criteria {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                escape(&c.name),
                c.count,
                c.mean,
                c.min
            );
        }
        h.push_str("</table></div></div>");
    }
    h.push_str("</section>");
}

fn scores(h: &mut String, a: &Analysis) {
    section(h, "scores", "Score histogram");
    if a.judge.scored_rows == 0 {
        h.push_str("<p class=\"muted\">No scores.</p>");
    } else {
        bar_chart(h, &a.judge.score_histogram);
    }
    h.push_str("</section>");
}

fn diversity_row(h: &mut String, name: &str, d: &TextDiversity) {
    let _ = write!(
        h,
        "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
        d.tokens, d.types, d.type_token_ratio, d.distinct_2, d.distinct_3
    );
}

fn diversity(h: &mut String, a: &Analysis) {
    let d = &a.diversity;
    section(h, "diversity", "Diversity");
    h.push_str("<table><tr><th></th><th>words</th><th>distinct words</th><th>type-token ratio</th><th>distinct bigrams</th><th>distinct trigrams</th></tr>");
    diversity_row(h, "user", &d.user);
    diversity_row(h, "assistant", &d.assistant);
    let _ = write!(
        h,
        "</table><p>{} distinct first questions in {} rows.</p>",
        d.distinct_first_questions, a.summary.rows
    );
    if d.repeated_first_questions.is_empty() {
        h.push_str("<p>No first question is repeated.</p>");
    } else {
        h.push_str("<h3>Repeated first questions</h3>");
        bar_chart(h, &d.repeated_first_questions);
    }
    literature(h, d);
    h.push_str("</section>");
}

/// The metrics papers use, per kind of text, each explained in one line.
fn literature(h: &mut String, d: &Diversity) {
    let scopes = [&d.first_questions, &d.user_turns, &d.assistant_turns];
    h.push_str("<h3>Diversity metrics</h3><table id=\"diversity-metrics\"><tr><th>metric</th><th>first questions</th><th>user turns</th><th>assistant turns</th></tr>");
    for metric in &SCOPE_METRICS {
        let _ = write!(h, "<tr><td>{}</td>", metric.label);
        for scope in scopes {
            let _ = write!(h, "<td>{}</td>", figure((metric.get)(scope).0));
        }
        h.push_str("</tr>");
    }
    h.push_str("<tr><td class=\"muted\">texts</td>");
    for scope in scopes {
        let _ = write!(h, "<td class=\"muted\">{}</td>", scope.texts);
    }
    h.push_str("</tr><tr><td></td>");
    for scope in scopes {
        let _ = write!(
            h,
            "<td class=\"muted\">{}</td>",
            sampled_text(scope.self_bleu)
        );
    }
    h.push_str("</tr></table>");
    match &d.loops {
        Some(l) => {
            let _ = write!(
                h,
                "<p>Looping rows: <b>{}</b> ({} with a repeated user turn, {} with a repeated answer; {}).</p>",
                figure(Some(l.looping_rows.value)),
                l.user_loops,
                l.assistant_loops,
                sampled_text(Some(l.looping_rows))
            );
        }
        None => h.push_str("<p>Looping rows: no rows.</p>"),
    }
    match &d.embedding {
        Some(e) => {
            let _ = write!(
                h,
                "<p>Mean cosine of first-question embeddings ({}): <b>{}</b> ({}).</p>",
                escape(&e.model),
                figure(Some(e.mean_cosine.value)),
                sampled_text(Some(e.mean_cosine))
            );
        }
        None => h.push_str("<p class=\"muted\">Mean cosine of first-question embeddings: not measured (give <code>--config FILE</code> whose <code>retrieval.embedding</code> names an embedding model).</p>"),
    }
    h.push_str("<ul class=\"muted\">");
    for metric in &SCOPE_METRICS {
        let _ = write!(h, "<li><b>{}</b>: {}.</li>", metric.label, metric.about);
    }
    let _ = write!(
        h,
        "<li><b>looping rows</b>: {LOOPS_ABOUT}.</li><li><b>embedding cosine</b>: {EMBEDDING_ABOUT}.</li></ul><p class=\"muted\">Self-BLEU, compression, near-duplicate pairs and loops are computed on a sample of at most {} texts (rows, for loops) drawn with seed {}, so the same dataset always gives the same figures; distinct-n counts every text.</p>",
        crate::DIVERSITY_SAMPLE,
        d.seed
    );
}

/// A figure with three decimals, or a dash when there was nothing to measure.
pub(crate) fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"))
}

/// "sampled: n of N".
pub(crate) fn sampled_text(sample: Option<Sampled>) -> String {
    sample.map_or_else(
        || "nothing to sample".to_owned(),
        |s| format!("sampled: {} of {}", s.sampled, s.of),
    )
}

fn lowest(h: &mut String, a: &Analysis) {
    section(h, "lowest", "Lowest-scoring dialogs");
    if a.lowest.is_empty() {
        h.push_str("<p class=\"muted\">No scored dialogs to show.</p>");
    }
    for d in &a.lowest {
        let _ = write!(
            h,
            "<div class=\"dialog\"><b>{}</b> score {:.3}{}",
            escape(&d.id),
            d.final_score,
            d.grade
                .as_deref()
                .map(|g| format!(" ({})", escape(g)))
                .unwrap_or_default()
        );
        if !d.feedback.is_empty() {
            h.push_str("<table>");
            for (name, score, feedback) in &d.feedback {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{score:.2}</td><td>{}</td></tr>",
                    escape(name),
                    escape(feedback)
                );
            }
            h.push_str("</table>");
        }
        for m in &d.conversations {
            let class = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
                Role::System => "system",
            };
            let _ = write!(
                h,
                "<div class=\"msg {class}\"><span class=\"role\">{class}</span>{}",
                escape(&m.content)
            );
            for call in &m.tool_calls {
                let _ = write!(
                    h,
                    "\n→ {}({})",
                    escape(&call.function.name),
                    escape(&call.function.arguments)
                );
            }
            h.push_str("</div>");
        }
        h.push_str("</div>");
    }
    h.push_str("</section>");
}

fn notes(h: &mut String) {
    section(h, "notes", "About this report");
    h.push_str("<p class=\"muted\">Made by afterimage analyze from the stored rows. Words are split on non-alphanumeric characters and lower-cased; n-grams do not cross messages. Lengths are in characters.</p></section>");
}

/// A horizontal bar chart as inline SVG; labels are escaped and cut to 48 characters.
fn bar_chart(h: &mut String, bars: &[Bucket]) {
    if bars.is_empty() {
        h.push_str("<p class=\"muted\">No data.</p>");
        return;
    }
    const ROW: usize = 22;
    const BAR_W: usize = 360;
    let max = bars.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    // Room for the longest (cut) label at about 7 px a character.
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count().min(48))
        .max()
        .unwrap_or(0);
    let label_w = (longest * 7 + 12).clamp(40, 340);
    let height = bars.len() * ROW + 4;
    let width = label_w + BAR_W + 60;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">"
    );
    for (i, b) in bars.iter().enumerate() {
        let y = i * ROW + 2;
        let w = ((b.count as f64 / max as f64) * BAR_W as f64).round() as usize;
        let label: String = if b.label.chars().count() > 48 {
            b.label.chars().take(47).chain(['…']).collect()
        } else {
            b.label.clone()
        };
        let _ = write!(
            h,
            "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\"><title>{full}</title>{label}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{bh}\" fill=\"#4f7cc9\" rx=\"2\"/><text x=\"{cx}\" y=\"{ty}\">{count}</text>",
            lx = label_w - 6,
            ty = y + 14,
            full = escape(&b.label),
            label = escape(&label),
            bh = ROW - 6,
            cx = label_w + w + 6,
            count = b.count
        );
    }
    h.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
