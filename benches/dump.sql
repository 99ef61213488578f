-- A digest of every target row without database ids (the same rows as
-- backfill_postgres::testing::dump_target): equal digests, equal targets.
SELECT 'metric_facts', count(*), md5(string_agg(r, E'\n' ORDER BY r)) FROM (
  SELECT format('%s %s %s %s %s %s %s %s %s', collector_result_id, brand_id, customer_id, query_id, collector_type,
                topic, collected_at AT TIME ZONE 'UTC', metadata, created_at AT TIME ZONE 'UTC') r FROM metric_facts) t
UNION ALL
SELECT 'brand_metrics', count(*), md5(string_agg(r, E'\n' ORDER BY r)) FROM (
  SELECT format('%s %s %s %s %s %s %s', f.collector_result_id, b.visibility_index, b.share_of_answers,
                b.total_mentions, b.product_mentions, b.first_position, b.has_presence) r
    FROM brand_metrics b JOIN metric_facts f ON f.id = b.metric_fact_id) t
UNION ALL
SELECT 'brand_sentiment', count(*), md5(string_agg(r, E'\n' ORDER BY r)) FROM (
  SELECT format('%s %s %s %s %s', f.collector_result_id, s.sentiment_label, s.sentiment_score,
                s.positive_sentences, s.negative_sentences) r
    FROM brand_sentiment s JOIN metric_facts f ON f.id = s.metric_fact_id) t
UNION ALL
SELECT 'competitor_metrics', count(*), md5(string_agg(r, E'\n' ORDER BY r)) FROM (
  SELECT format('%s %s %s %s %s %s %s %s', f.collector_result_id, c.competitor_id, c.visibility_index,
                c.share_of_answers, c.total_mentions, c.product_mentions, c.first_position, c.has_presence) r
    FROM competitor_metrics c JOIN metric_facts f ON f.id = c.metric_fact_id) t
UNION ALL
SELECT 'competitor_sentiment', count(*), md5(string_agg(r, E'\n' ORDER BY r)) FROM (
  SELECT format('%s %s %s %s %s %s', f.collector_result_id, s.competitor_id, s.sentiment_label,
                s.sentiment_score, s.positive_sentences, s.negative_sentences) r
    FROM competitor_sentiment s JOIN metric_facts f ON f.id = s.metric_fact_id) t
ORDER BY 1;
