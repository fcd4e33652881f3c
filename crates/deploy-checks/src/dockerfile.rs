//! A small reader of Dockerfiles and `.dockerignore` files: enough to check
//! which stages exist, what they copy from the build context, and what the
//! context leaves out.

/// One instruction, its arguments with continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper case: `FROM`, `COPY`, `RUN`, ...
    pub keyword: String,
    pub args: String,
    /// 1-based line where it starts.
    pub line: usize,
}

/// One build stage: `FROM image [AS name]` and what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub image: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The instructions with this keyword.
    pub fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.instructions
            .iter()
            .filter(move |instruction| instruction.keyword == keyword)
    }
}

/// Parses a Dockerfile into its stages. Instructions before the first `FROM`
/// (global `ARG`s) are not part of any stage and are dropped.
pub fn parse(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|word| !word.starts_with("--"))
                .collect();
            let image = words.first().copied().unwrap_or_default().to_owned();
            let name = match words.as_slice() {
                [_, r#as, name] if r#as.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage {
                image,
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        }
    }
    stages
}

/// The instructions of a Dockerfile: comments dropped, continuations joined.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (continues, content) = match trimmed.strip_suffix('\\') {
            Some(content) => (true, content.trim_end()),
            None => (false, trimmed),
        };
        let (line, mut buffer) = pending.take().unwrap_or((index + 1, String::new()));
        if !buffer.is_empty() && !content.is_empty() {
            buffer.push(' ');
        }
        buffer.push_str(content);
        if continues {
            pending = Some((line, buffer));
            continue;
        }
        if buffer.is_empty() {
            continue;
        }
        let (keyword, args) = buffer
            .split_once(char::is_whitespace)
            .unwrap_or((buffer.as_str(), ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
            line,
        });
    }
    out
}

/// The parts of a `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// `--from=<stage or image>`, when it copies from there rather than from
    /// the build context.
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub destination: String,
}

/// Splits the arguments of a `COPY` or `ADD` (shell or JSON form).
pub fn copy(args: &str) -> Copy {
    let mut from = None;
    let mut rest = args.trim();
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        if let Some(stage) = word.strip_prefix("from=") {
            from = Some(stage.to_owned());
        }
        rest = after.trim_start();
    }
    let mut paths: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).unwrap_or_default()
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    let destination = paths.pop().unwrap_or_default();
    Copy {
        from,
        sources: paths,
        destination,
    }
}

/// The patterns of a `.dockerignore`, in order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(pattern) => (true, pattern.trim()),
                    None => (false, line),
                };
                let segments = pattern
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|segment| !segment.is_empty() && *segment != ".")
                    .map(str::to_owned)
                    .collect();
                (exception, segments)
            })
            .collect();
        Self { patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of
    /// the build context: the last pattern that matches it or one of its
    /// parent directories decides, as in Docker.
    pub fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path
            .trim_start_matches("./")
            .split('/')
            .filter(|segment| !segment.is_empty() && *segment != ".")
            .collect();
        let mut excluded = false;
        for (exception, pattern) in &self.patterns {
            let matched = (1..=segments.len()).any(|len| matches(pattern, &segments[..len]));
            if matched {
                excluded = !exception;
            }
        }
        excluded
    }
}

/// Whether path segments match pattern segments (`**` spans any number of
/// segments; `*` and `?` stay within one).
fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => glob(first, segment) && matches(rest, path_rest),
            None => false,
        },
    }
}

/// `*` and `?` wildcards within one segment.
fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    fn go(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| go(rest, &text[skip..])),
            Some(('?', rest)) => !text.is_empty() && go(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && go(rest, &text[1..]),
        }
    }
    go(&pattern, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_continuations() {
        let stages = parse(
            "# syntax=docker/dockerfile:1\nARG X=1\nFROM rust:1 AS chef\nRUN a \\\n    # comment\n    && b\nFROM debian:13\nCOPY --from=chef /a /b\n",
        );
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name.as_deref(), Some("chef"));
        assert_eq!(stages[0].instructions[0].args, "a && b");
        assert_eq!(stages[1].image, "debian:13");
        assert_eq!(stages[1].name, None);
        let copy = copy(&stages[1].instructions[0].args);
        assert_eq!(copy.from.as_deref(), Some("chef"));
        assert_eq!(copy.sources, ["/a"]);
        assert_eq!(copy.destination, "/b");
    }

    #[test]
    fn copy_forms() {
        let shell = copy("--chmod=0755 a b ./");
        assert_eq!(shell.from, None);
        assert_eq!(shell.sources, ["a", "b"]);
        let json = copy(r#"["a b", "c"]"#);
        assert_eq!(json.sources, ["a b"]);
        assert_eq!(json.destination, "c");
    }

    #[test]
    fn dockerignore_semantics() {
        let ignore = DockerIgnore::parse("**/target\n.git\n*.md\n!README.md\nk8s/\n");
        assert!(ignore.excludes("target"));
        assert!(ignore.excludes("crates/x/target/debug/y"));
        assert!(ignore.excludes(".git/HEAD"));
        assert!(ignore.excludes("NOTES.md"));
        assert!(!ignore.excludes("README.md"));
        assert!(!ignore.excludes("crates/x/NOTES.md"));
        assert!(ignore.excludes("k8s/base"));
        assert!(!ignore.excludes("crates"));
        assert!(!ignore.excludes("Cargo.toml"));
    }
}
