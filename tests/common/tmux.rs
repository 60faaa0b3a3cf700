//! `roster top` in a real terminal: a tmux server of the test's own (a pane
//! is a real pseudo-terminal), keys typed with `send-keys`, the screen read
//! with `capture-pane`.
//!
//! Every wait polls the screen until what it waits for is there; the
//! deadline ([`super::PATIENCE`]) only bounds a failure. The pane runs a
//! small shell script that saves the terminal's modes (`stty -g`) before
//! and after `top`, and then prints `top exited with CODE`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{ROSTER, eventually};

/// `text` as one word of `sh`, in single quotes.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A tmux server of the test's own, with one pane running `roster top`;
/// killed when dropped.
pub struct Tmux {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `roster --db DB top ARGS` in a pane of `width` x `height`,
    /// with `env` set for it. `db` is a file's path or a PostgreSQL URL.
    pub fn top(
        db: impl AsRef<OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
        width: u16,
        height: u16,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("tmux.sock");
        let mut command: Vec<String> = env
            .iter()
            .map(|(name, value)| format!("{name}={}", quote(value)))
            .collect();
        command.push(quote(ROSTER));
        command.extend([
            "--db".to_owned(),
            quote(&db.as_ref().to_string_lossy()),
            "top".to_owned(),
        ]);
        command.extend(args.iter().map(|arg| quote(arg)));
        let script = format!(
            "cd {dir} && stty -g > before && {top}; code=$?; stty -g > after; \
             echo \"top exited with $code\"; exec cat",
            dir = quote(&dir.path().display().to_string()),
            top = command.join(" ")
        );
        let tmux = Self { socket, dir };
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "sh",
            "-c",
            &script,
        ]);
        tmux
    }

    /// Runs a tmux command against this server; fails the test if tmux
    /// does.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .expect("run tmux (apt-get install -y tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("tmux");
        command
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .env_remove("ROSTER_DB")
            .env_remove("TMUX")
            .stdin(Stdio::null());
        command
    }

    /// The screen as text, one line per row.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// Waits until the screen satisfies `check`, and returns it.
    pub fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(what, || {
                last = self.screen();
                check(&last).then(|| last.clone())
            })
        }));
        match found {
            Ok(screen) => screen,
            Err(_) => panic!("{what}: not on the screen; the screen was:\n{last}"),
        }
    }

    /// Waits until `text` is on the screen.
    pub fn wait_text(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?} on the screen"), |screen| {
            screen.contains(text)
        })
    }

    /// Types keys, as tmux names them (`q`, `End`, `Enter`...).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// A pane variable, such as `alternate_on`.
    pub fn pane(&self, variable: &str) -> String {
        self.run(&["display-message", "-p", &format!("#{{{variable}}}")])
            .trim()
            .to_owned()
    }

    /// The process id of `roster top`: the child of the pane's shell.
    pub fn top_pid(&self) -> i32 {
        let shell: i32 = self.pane("pane_pid").parse().expect("pane_pid");
        eventually("the roster process under the pane's shell", || {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .map_while(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
                .find(|pid| {
                    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                        return false;
                    };
                    // pid (comm) state ppid ...: comm may hold spaces.
                    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                    let ppid = after.split_whitespace().nth(1);
                    ppid == Some(&shell.to_string()) && stat.contains("(roster)")
                })
        })
    }

    /// Waits for `top` to end, checks that it ended with `code` and that
    /// the terminal is as it was before it started; returns the screen.
    pub fn expect_exit_and_restored(&self, code: i32) -> String {
        let screen = self.wait_text("top exited with");
        assert!(
            screen.contains(&format!("top exited with {code}")),
            "expected exit code {code}:\n{screen}"
        );
        let before = std::fs::read_to_string(self.dir.path().join("before")).expect("before");
        let after = std::fs::read_to_string(self.dir.path().join("after")).expect("after");
        assert!(!before.trim().is_empty(), "stty -g printed nothing");
        assert_eq!(before, after, "the terminal's modes (stty -g) changed");
        assert_eq!(
            self.pane("alternate_on"),
            "0",
            "still on the alternate screen"
        );
        assert_eq!(self.pane("cursor_flag"), "1", "the cursor is still hidden");
        assert!(
            !screen.contains("recent events"),
            "top's screen is still shown:\n{screen}"
        );
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).output();
    }
}
