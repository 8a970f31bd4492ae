//! Reads topics per region: `ListTopics` and `ListSubscriptions` (all subscriptions of the region at once,
//! grouped by topic) instead of a call per topic; tags per topic (SNS has no batched tag read and ownership lives
//! there), and attributes only for topics the stack names or owns.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sns::types::Tag;
use futures::future::try_join_all;

use crate::aws::error::{Absent, Context};
use crate::aws::{Aws, AwsError};
use crate::live::{owned_by, LiveTopic, ReadScope};
use crate::model::{Region, Subscription, Tags};

/// What SNS answers for a topic that does not exist (`ListTagsForResource` says it differently).
const MISSING: &[&str] = &["NotFound", "ResourceNotFound"];

pub(super) struct SnsState {
    pub topics: BTreeMap<Region, BTreeMap<String, LiveTopic>>,
    pub external: BTreeMap<String, bool>,
}

pub(super) async fn read(aws: &Aws, scope: &ReadScope) -> Result<SnsState, AwsError> {
    let regions: BTreeSet<&Region> = scope.regions.iter().chain(scope.topics.keys()).collect();
    let read_regions = try_join_all(regions.iter().map(|region| read_region(aws, scope, region)));
    let (per_region, account) = tokio::try_join!(read_regions, aws.account_id())?;
    let listed: BTreeSet<&str> = per_region.iter().flat_map(|(_, _, arns)| arns.iter().map(String::as_str)).collect();

    let external = try_join_all(scope.external_topics.iter().map(|arn| {
        let parts: Vec<&str> = arn.split(':').collect();
        let (region, owner) = (parts.get(3).copied().unwrap_or_default(), parts.get(4).copied().unwrap_or_default());
        // Topics of this account in a region just listed are answered by the listing.
        let in_listing = owner == account.as_str() && regions.iter().any(|r| r.as_str() == region);
        let listed = &listed;
        async move {
            let exists =
                if in_listing { listed.contains(arn.as_str()) } else { topic_exists(aws, region, arn).await? };
            Ok::<_, AwsError>((arn.clone(), exists))
        }
    }))
    .await?;

    let topics = per_region
        .into_iter()
        .filter(|(_, kept, _)| !kept.is_empty())
        .map(|(region, kept, _)| (region.clone(), kept))
        .collect();
    Ok(SnsState { topics, external: external.into_iter().collect() })
}

type RegionTopics<'a> = (&'a Region, BTreeMap<String, LiveTopic>, Vec<String>);

/// The kept topics of one region, and the ARN of every topic listed there.
async fn read_region<'a>(aws: &Aws, scope: &ReadScope, region: &'a Region) -> Result<RegionTopics<'a>, AwsError> {
    let client = aws.sns(region.as_str());
    let arns = async {
        let mut arns = Vec::new();
        let mut pages = client.list_topics().into_paginator().send();
        while let Some(page) = aws.limited(pages.next()).await {
            let page = page.during(format_args!("ListTopics in {region}"))?;
            arns.extend(page.topics().iter().filter_map(|t| t.topic_arn()).map(str::to_owned));
        }
        Ok::<_, AwsError>(arns)
    };
    let subscriptions = async {
        let mut by_topic: BTreeMap<String, BTreeMap<Subscription, String>> = BTreeMap::new();
        let mut pages = client.list_subscriptions().into_paginator().send();
        while let Some(page) = aws.limited(pages.next()).await {
            for s in page.during(format_args!("ListSubscriptions in {region}"))?.subscriptions() {
                let (Some(topic), Some(protocol), Some(endpoint)) = (s.topic_arn(), s.protocol(), s.endpoint()) else {
                    continue;
                };
                let subscription = Subscription { protocol: protocol.to_owned(), endpoint: endpoint.to_owned() };
                let arn = s.subscription_arn().unwrap_or("PendingConfirmation").to_owned();
                by_topic.entry(topic.to_owned()).or_default().insert(subscription, arn);
            }
        }
        Ok::<_, AwsError>(by_topic)
    };
    let (arns, mut subscriptions) = tokio::try_join!(arns, subscriptions)?;

    let named = scope.topics.get(region);
    let client = &client;
    let kept = try_join_all(arns.iter().map(|arn| async move {
        let name = arn.rsplit(':').next().unwrap_or_default();
        let request = client.list_tags_for_resource().resource_arn(arn);
        let answer = aws.limited(request.send()).await.during(format_args!("ListTagsForResource {arn}"));
        // Deleted since it was listed.
        let Some(answer) = answer.absent_on(MISSING)? else {
            return Ok(None);
        };
        let tags = tags(answer.tags());
        if !(named.is_some_and(|n| n.contains(name)) || owned_by(&tags, &scope.stack)) {
            return Ok(None);
        }
        let request = client.get_topic_attributes().topic_arn(arn);
        let answer = aws.limited(request.send()).await.during(format_args!("GetTopicAttributes {arn}"));
        let Some(answer) = answer.absent_on(MISSING)? else {
            return Ok(None);
        };
        let attribute =
            |key: &str| answer.attributes().and_then(|a| a.get(key)).filter(|v| !v.is_empty()).map(String::to_owned);
        Ok::<_, AwsError>(Some(LiveTopic {
            name: name.to_owned(),
            arn: arn.clone(),
            region: region.clone(),
            tags,
            display_name: attribute("DisplayName"),
            kms_key: attribute("KmsMasterKeyId"),
            subscriptions: BTreeMap::new(),
        }))
    }))
    .await?;
    let kept = kept
        .into_iter()
        .flatten()
        .map(|mut topic| {
            topic.subscriptions = subscriptions.remove(&topic.arn).unwrap_or_default();
            (topic.name.clone(), topic)
        })
        .collect();
    Ok((region, kept, arns))
}

/// Whether a topic outside the listings exists. Another account's topic we may not read answers
/// `AuthorizationError`: it cannot be told apart from a missing one, so it is taken as existing, like S3's 403.
async fn topic_exists(aws: &Aws, region: &str, arn: &str) -> Result<bool, AwsError> {
    let request = aws.sns(region).get_topic_attributes().topic_arn(arn);
    match aws.limited(request.send()).await.during(format_args!("GetTopicAttributes {arn}")) {
        Ok(_) => Ok(true),
        Err(e) if MISSING.iter().any(|code| e.has_code(code)) => Ok(false),
        Err(e) if e.has_code("AuthorizationError") => Ok(true),
        Err(e) => Err(e),
    }
}

pub(in crate::aws) fn tags(tags: &[Tag]) -> Tags {
    tags.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
}
