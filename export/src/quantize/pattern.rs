//! Glob patterns for `--int8-keep-float`: `*` matches any run of characters (dots and
//! slashes included), `?` exactly one; everything else literally. The whole name must match.

/// Whether `name` matches `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // iterative matcher with backtracking to the last '*'
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        let w = "encoder.enc_spatial_transformer.layers.1.1.qkv.weight[0:128]";
        assert!(glob_match("*", w));
        assert!(glob_match("encoder.*", w));
        assert!(glob_match("*.qkv.*", w));
        assert!(glob_match("*qkv.weight[0:128]", w));
        assert!(glob_match("encoder.enc_spatial_transformer.layers.?.1.qkv*", w));
        assert!(!glob_match("decoder.*", w));
        assert!(!glob_match("*.qkv", w));
        assert!(!glob_match("encoder", w));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }
}
