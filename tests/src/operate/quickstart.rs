//! The README's runnable walk-through, as data: the `console` blocks marked
//! `<!-- quickstart -->`, cut into commands (`$ ` lines, with their `\`
//! continuations and here-documents) and the output shown under each; the
//! shell script that runs them in order; and the comparison of what each
//! command printed with what the README shows.
//!
//! Output is compared line by line after [`normalize`]: runs of blanks
//! collapse, and what differs from run to run by nature — decimal figures
//! (durations, means), timestamps, the port after `127.0.0.1:` — is
//! replaced by a placeholder. Counts, names, rows and messages must match.
//! Every line the README shows must be among the lines printed (in any
//! order: rows of `pgstash top` of nearly equal time may swap).

/// The marker line that makes the next fenced block runnable.
pub const MARKER: &str = "<!-- quickstart -->";

/// One command of the README and the output it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The command as the README prints it, without the `$ ` prompt.
    pub command: String,
    /// The output lines shown under it (empty lines dropped).
    pub expected: Vec<String>,
}

/// The steps of every marked block, in README order. Panics when a marker
/// is not followed by a ```` ```console ```` block, or a block ends inside
/// a here-document (a README edit that broke the format must not silently
/// run fewer commands).
pub fn parse(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim() != MARKER {
            continue;
        }
        let fence = lines.next().map(|(_, l)| l.trim());
        assert_eq!(
            fence,
            Some("```console"),
            "README line {}: {MARKER} must be followed by a ```console block",
            n + 1
        );
        let mut block = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            block.push(l);
        }
        steps.extend(parse_block(&block, n + 1));
    }
    steps
}

fn parse_block(block: &[&str], at: usize) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let line = block[i];
        i += 1;
        let Some(first) = line.strip_prefix("$ ") else {
            if let Some(step) = steps.last_mut() {
                if !line.trim().is_empty() {
                    step.expected.push(line.to_owned());
                }
            } else {
                assert!(
                    line.trim().is_empty(),
                    "README block at line {at}: output before any command: {line:?}"
                );
            }
            continue;
        };
        let mut command = vec![first.to_owned()];
        while command.last().is_some_and(|l| l.ends_with('\\')) && i < block.len() {
            command.push(block[i].to_owned());
            i += 1;
        }
        if let Some(word) = heredoc_word(&command.join("\n")) {
            loop {
                let Some(l) = block.get(i) else {
                    panic!("README block at line {at}: here-document {word:?} never ends");
                };
                command.push((*l).to_owned());
                i += 1;
                if l.trim_end() == word {
                    break;
                }
            }
        }
        steps.push(Step {
            command: command.join("\n"),
            expected: Vec::new(),
        });
    }
    steps
}

/// The terminating word of a here-document started in `command`
/// (`<<'EOF'`, `<<"EOF"`, `<<EOF`), if any.
fn heredoc_word(command: &str) -> Option<String> {
    let at = command.find("<<")?;
    let rest = command[at + 2..].trim_start_matches('-').trim_start();
    let word: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// What separates the output of one command from the next in the script's
/// output: `MARK <index>` on a line of its own.
pub const MARK: &str = "@@quickstart-step@@";

/// A bash script that runs `steps` in `dir`, printing [`MARK`] before each
/// and stopping at the first command that fails; the background jobs it
/// started are killed when it ends.
pub fn script(steps: &[Step], dir: &std::path::Path) -> String {
    let mut s = String::from("set -eo pipefail\nexec 2>&1\n");
    s.push_str("trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    s.push_str(&format!("cd '{}'\n", dir.display()));
    for (i, step) in steps.iter().enumerate() {
        s.push_str(&format!("printf '\\n{MARK} {i}\\n'\n"));
        s.push_str(&step.command);
        s.push('\n');
    }
    s.push_str(&format!("printf '\\n{MARK} end\\n'\n"));
    s
}

/// The script's output cut per step.
#[derive(Debug, PartialEq, Eq)]
pub struct Outputs {
    /// What each step printed (empty for steps that never ran).
    pub steps: Vec<String>,
    /// How many steps started.
    pub started: usize,
    /// Whether the script got past its last step.
    pub finished: bool,
}

/// Cuts the script's output at its [`MARK`] lines.
pub fn split_output(output: &str, steps: usize) -> Outputs {
    let mut cut = Outputs {
        steps: vec![String::new(); steps],
        started: 0,
        finished: false,
    };
    let mut current: Option<usize> = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            let rest = rest.trim();
            cut.finished = rest == "end";
            current = rest.parse().ok();
            if let Some(i) = current {
                cut.started = cut.started.max(i + 1);
            }
            continue;
        }
        if let Some(out) = current.and_then(|i| cut.steps.get_mut(i)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    cut
}

/// The lines of `expected` that `actual` does not contain, compared after
/// [`normalize`].
pub fn missing(expected: &[String], actual: &str) -> Vec<String> {
    let actual: Vec<String> = actual.lines().map(normalize).collect();
    expected
        .iter()
        .filter(|e| !actual.contains(&normalize(e)))
        .cloned()
        .collect()
}

/// A line with what varies between runs replaced: blanks collapsed,
/// `YYYY-MM-DDThh:mm:ss(.fff)Z` timestamps → `<ts>`, decimal numbers
/// (`0.181`, `150.888`) → `<n.n>`, the port after `127.0.0.1:` → `<port>`.
pub fn normalize(line: &str) -> String {
    let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = collapsed.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = timestamp_len(&chars[i..]) {
            out.push_str("<ts>");
            i += len;
            continue;
        }
        if out.ends_with("127.0.0.1:") && chars[i].is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str("<port>");
            continue;
        }
        // Not inside a word, a number or a dotted name (`127.0.0.1`).
        let starts_number = chars[i].is_ascii_digit()
            && !out
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if starts_number {
            let digits = run_len(&chars[i..], |c| c.is_ascii_digit());
            let after = i + digits;
            if chars.get(after) == Some(&'.')
                && chars.get(after + 1).is_some_and(|c| c.is_ascii_digit())
                && !is_dotted_quad(&chars[i..])
            {
                let fraction = run_len(&chars[after + 1..], |c| c.is_ascii_digit());
                out.push_str("<n.n>");
                i = after + 1 + fraction;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn run_len(chars: &[char], f: impl Fn(char) -> bool) -> usize {
    chars.iter().take_while(|c| f(**c)).count()
}

/// Whether an IPv4 address starts here (kept as it is).
fn is_dotted_quad(chars: &[char]) -> bool {
    let text: String = chars
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == '.')
        .collect();
    text.split('.').count() == 4 && text.split('.').all(|p| !p.is_empty())
}

/// Length of a `YYYY-MM-DDThh:mm:ss(.f+)?Z` timestamp starting here.
fn timestamp_len(chars: &[char]) -> Option<usize> {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd";
    if chars.len() < SHAPE.len() {
        return None;
    }
    let fits = SHAPE.chars().zip(chars).all(|(s, c)| match s {
        'd' => c.is_ascii_digit(),
        other => other == *c,
    });
    if !fits {
        return None;
    }
    let mut len = SHAPE.len();
    if chars.get(len) == Some(&'.') {
        len += 1 + run_len(&chars[len + 1..], |c| c.is_ascii_digit());
    }
    (chars.get(len) == Some(&'Z')).then_some(len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_continuations_and_heredocs_are_cut_apart() {
        let readme = "text\n<!-- quickstart -->\n```console\n$ echo a \\\n  b\na b\n$ cat <<'SQL'\n$ inside\nSQL\nshown\n```\n```console\n$ not marked\n```\n";
        let steps = parse(readme);
        assert_eq!(
            steps,
            vec![
                Step {
                    command: "echo a \\\n  b".into(),
                    expected: vec!["a b".into()]
                },
                Step {
                    command: "cat <<'SQL'\n$ inside\nSQL".into(),
                    expected: vec!["shown".into()]
                },
            ]
        );
    }

    #[test]
    fn what_varies_between_runs_is_normalized_and_the_rest_is_not() {
        assert_eq!(
            normalize(
                r#"{"ts":"2026-11-22T15:47:33.020Z","duration_ms":150.888,"client":"127.0.0.1:50944","rows":1}"#
            ),
            r#"{"ts":"<ts>","duration_ms":<n.n>,"client":"127.0.0.1:<port>","rows":1}"#
        );
        assert_eq!(
            normalize("     3   11.2   3.719  33  user_by_id"),
            "3 <n.n> <n.n> 33 user_by_id"
        );
        assert_ne!(
            normalize("pgstash_cache_hits_total{rule=\"user_by_id\"} 1"),
            normalize("pgstash_cache_hits_total{rule=\"user_by_id\"} 2")
        );
        assert_eq!(
            missing(&["a  1.5 b".into()], "x\na 2.25 b\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            missing(&["a 1 b".into()], "a 2 b\n"),
            vec!["a 1 b".to_owned()]
        );
    }

    #[test]
    fn output_is_cut_per_step() {
        let out = format!("\n{MARK} 0\nx\n\n{MARK} 1\ny\n{MARK} end\n");
        assert_eq!(
            split_output(&out, 2),
            Outputs {
                steps: vec!["x\n\n".into(), "y\n".into()],
                started: 2,
                finished: true
            }
        );
        let cut = split_output(&format!("\n{MARK} 0\nx\n"), 2);
        assert_eq!((cut.started, cut.finished), (1, false));
    }
}
