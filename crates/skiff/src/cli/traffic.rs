//! `skiff traffic` and `skiff rollback`: a service's traffic split and tags, through the
//! daemon's API. The CLI reads the current traffic, applies the changes the arguments
//! name, and sends the whole block back (the daemon checks it).

use super::client::Client;
use super::output::{self, Format};
use clap::Args;
use hyper::Method;
use skiff_control::documents::{ServiceDetail, TrafficDetail};
use skiff_core::TrafficTarget;

#[derive(Args)]
pub struct TrafficArgs {
    /// Service name.
    name: String,
    /// New split, `REVISION=PERCENT` or `LATEST=PERCENT` (the latest ready revision);
    /// percents must add up to 100. Without any, the split stays and only tags change.
    #[arg(value_name = "REVISION=PERCENT")]
    split: Vec<String>,
    /// All traffic to the latest ready revision (and later deploys), as `LATEST=100`.
    #[arg(long, conflicts_with = "split")]
    to_latest: bool,
    /// Name a revision (or LATEST) at TAG-NAME.<domain>, whatever its share
    /// (repeatable).
    #[arg(long = "tag", value_name = "TAG=REVISION")]
    tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "remove-tag", value_name = "TAG")]
    remove_tags: Vec<String>,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// Service name.
    name: String,
    /// Revision to send all traffic to (default: the one before the revision that gets
    /// the most traffic now).
    revision: Option<String>,
}

/// `REVISION` or `LATEST` as a target's revision (`None` = latest).
fn revision_of(word: &str) -> Option<String> {
    (!word.eq_ignore_ascii_case("latest")).then(|| word.to_owned())
}

fn parse_split(word: &str) -> anyhow::Result<TrafficTarget> {
    let (rev, pct) = word
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{word:?}: want REVISION=PERCENT or LATEST=PERCENT"))?;
    let percent: u32 = pct
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("{word:?}: {pct:?} is not a percent (0-100)"))?;
    anyhow::ensure!(percent <= 100, "{word:?}: a percent is 0-100");
    Ok(TrafficTarget {
        revision: revision_of(rev),
        percent,
        tag: None,
    })
}

/// The traffic as stored (latest targets unresolved) from `describe`'s resolved view.
pub(super) fn current(detail: &ServiceDetail) -> Vec<TrafficTarget> {
    detail
        .traffic
        .iter()
        .map(|t| TrafficTarget {
            revision: (!t.latest).then(|| t.revision.clone()),
            percent: t.percent,
            tag: t.tag.clone(),
        })
        .collect()
}

/// Drops `tag` from the targets; a target left with neither share nor tag goes.
fn untag(targets: &mut Vec<TrafficTarget>, tag: &str) {
    for t in targets.iter_mut() {
        if t.tag.as_deref() == Some(tag) {
            t.tag = None;
        }
    }
    targets.retain(|t| t.percent > 0 || t.tag.is_some());
}

/// The traffic block after the arguments' changes.
fn changed(mut targets: Vec<TrafficTarget>, a: &TrafficArgs) -> anyhow::Result<Vec<TrafficTarget>> {
    let split: Vec<TrafficTarget> = if a.to_latest {
        vec![TrafficTarget::latest(100)]
    } else {
        a.split
            .iter()
            .map(|w| parse_split(w))
            .collect::<anyhow::Result<_>>()?
    };
    if !split.is_empty() {
        // Tags stay where they point, with no share; the new split takes all of it.
        targets = targets
            .into_iter()
            .filter(|t| t.tag.is_some())
            .map(|t| TrafficTarget { percent: 0, ..t })
            .chain(split)
            .collect();
    }
    for tag in &a.remove_tags {
        anyhow::ensure!(
            targets
                .iter()
                .any(|t| t.tag.as_deref() == Some(tag.as_str())),
            "service {} has no tag {tag:?}",
            a.name
        );
        untag(&mut targets, tag);
    }
    for word in &a.tags {
        let (tag, rev) = word
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--tag {word:?}: want TAG=REVISION or TAG=LATEST"))?;
        untag(&mut targets, tag);
        targets.push(TrafficTarget {
            revision: revision_of(rev),
            percent: 0,
            tag: Some(tag.to_owned()),
        });
    }
    Ok(targets)
}

pub fn set(client: &Client, format: Format, a: TrafficArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.to_latest || !a.split.is_empty() || !a.tags.is_empty() || !a.remove_tags.is_empty(),
        "nothing to change: give REVISION=PERCENT…, --to-latest, --tag or --remove-tag"
    );
    let detail: ServiceDetail =
        client.call(Method::GET, &format!("/v1/services/{}", a.name), None)?;
    let traffic = changed(current(&detail), &a)?;
    let detail: ServiceDetail = client.call(
        Method::PUT,
        &format!("/v1/services/{}/traffic", a.name),
        Some(serde_json::json!({ "traffic": traffic })),
    )?;
    show(format, &detail)
}

pub fn rollback(client: &Client, format: Format, a: RollbackArgs) -> anyhow::Result<()> {
    let detail: ServiceDetail = client.call(
        Method::POST,
        &format!("/v1/services/{}/rollback", a.name),
        Some(serde_json::json!({ "revision": a.revision })),
    )?;
    show(format, &detail)
}

fn show(format: Format, detail: &ServiceDetail) -> anyhow::Result<()> {
    match format {
        Format::Json => output::json(&serde_json::to_value(&detail.traffic)?),
        Format::Table => {
            println!("Service {} traffic:", detail.name);
            table(&detail.traffic);
        }
    }
    Ok(())
}

/// The traffic block as a table, for people.
pub fn table(traffic: &[TrafficDetail]) {
    let rows: Vec<Vec<String>> = traffic
        .iter()
        .map(|t| {
            vec![
                format!("{}%", t.percent),
                if t.latest {
                    format!("{} (latest)", t.revision)
                } else {
                    t.revision.clone()
                },
                t.tag.clone().unwrap_or_else(|| "-".into()),
                t.url.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["PERCENT", "REVISION", "TAG", "URL"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        a: TrafficArgs,
    }

    fn args(words: &[&str]) -> TrafficArgs {
        let mut all = vec!["traffic", "api"];
        all.extend_from_slice(words);
        Cmd::try_parse_from(all).unwrap().a
    }

    fn tagged(rev: Option<&str>, percent: u32, tag: &str) -> TrafficTarget {
        TrafficTarget {
            revision: rev.map(str::to_owned),
            percent,
            tag: Some(tag.into()),
        }
    }

    #[test]
    fn a_new_split_keeps_tags_at_no_share() {
        let now = vec![tagged(None, 100, "current")];
        let got = changed(now, &args(&["api-00001=90", "LATEST=10"])).unwrap();
        assert_eq!(
            got,
            [
                tagged(None, 0, "current"),
                TrafficTarget::pinned("api-00001", 90),
                TrafficTarget::latest(10),
            ]
        );
    }

    #[test]
    fn tags_move_and_go_without_touching_the_split() {
        let now = vec![
            TrafficTarget::latest(100),
            tagged(Some("api-00001"), 0, "old"),
        ];
        let got = changed(
            now.clone(),
            &args(&["--tag", "old=api-00002", "--tag", "new=LATEST"]),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                TrafficTarget::latest(100),
                tagged(Some("api-00002"), 0, "old"),
                tagged(None, 0, "new"),
            ]
        );
        let got = changed(now.clone(), &args(&["--remove-tag", "old"])).unwrap();
        assert_eq!(got, [TrafficTarget::latest(100)]);
        assert!(changed(now, &args(&["--remove-tag", "nope"])).is_err());
    }

    #[test]
    fn bad_words_are_named() {
        let e = changed(vec![], &args(&["api-00001"])).unwrap_err();
        assert!(e.to_string().contains("want REVISION=PERCENT"), "{e}");
        let e = changed(vec![], &args(&["api-00001=ninety"])).unwrap_err();
        assert!(e.to_string().contains("\"ninety\" is not a percent"), "{e}");
        assert!(changed(vec![], &args(&["api-00001=101"])).is_err());
    }
}
