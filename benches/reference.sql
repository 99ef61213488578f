-- The physical reference: DESIGN §3 as one hand-written, set-based SQL
-- migration inside Postgres (same tables, same database, same machine).
-- scripts/bench-e2e.sh times it beside the tool on a copy of the same data
-- and checks that both produce the same target rows.
\set ON_ERROR_STOP on
BEGIN;

-- The brand row of each key: latest by (processed_at, id).
CREATE TEMP TABLE ref_brand ON COMMIT DROP AS
SELECT DISTINCT ON (collector_result_id) *
  FROM extracted_positions
 WHERE competitor_name IS NULL OR btrim(competitor_name, E' \t\n\r\f') = ''
 ORDER BY collector_result_id, processed_at DESC, id DESC;

-- Competitor name resolution: exact (smallest id), else a unique normalized match.
CREATE TEMP TABLE ref_exact ON COMMIT DROP AS
SELECT brand_id, competitor_name AS name, (array_agg(id ORDER BY id))[1] AS id
  FROM brand_competitors GROUP BY 1, 2;
CREATE TEMP TABLE ref_norm ON COMMIT DROP AS
SELECT brand_id, lower(btrim(regexp_replace(competitor_name, E'[ \t\n\r\f]+', ' ', 'g'))) AS name,
       (array_agg(id ORDER BY id))[1] AS id, count(*) AS n
  FROM brand_competitors GROUP BY 1, 2;

-- Each competitor row resolved against its group's brand, the latest per competitor.
CREATE TEMP TABLE ref_comp ON COMMIT DROP AS
SELECT DISTINCT ON (e.collector_result_id, e.cid) e.*
  FROM (
    SELECT e.*, coalesce(x.id, CASE WHEN nm.n = 1 THEN nm.id END) AS cid
      FROM extracted_positions e
      JOIN ref_brand b ON b.collector_result_id = e.collector_result_id
      LEFT JOIN ref_exact x ON x.brand_id = b.brand_id AND x.name = e.competitor_name
      LEFT JOIN ref_norm nm ON nm.brand_id = b.brand_id
            AND nm.name = lower(btrim(regexp_replace(e.competitor_name, E'[ \t\n\r\f]+', ' ', 'g')))
     WHERE e.competitor_name IS NOT NULL AND btrim(e.competitor_name, E' \t\n\r\f') <> ''
  ) e
 WHERE cid IS NOT NULL
 ORDER BY e.collector_result_id, e.cid, e.processed_at DESC, e.id DESC;

CREATE FUNCTION pg_temp.fits(v numeric) RETURNS boolean IMMUTABLE LANGUAGE sql
  AS $$ SELECT v IS NULL OR abs(round(v, 2)) <= 999.99 $$;
CREATE FUNCTION pg_temp.label(l text) RETURNS text IMMUTABLE LANGUAGE sql
  AS $$ SELECT CASE WHEN upper(btrim(l, E' \t\n\r\f')) IN ('POSITIVE', 'NEGATIVE', 'NEUTRAL')
                    THEN upper(btrim(l, E' \t\n\r\f')) END $$;

-- Keys that migrate: a collector result, a customer, and every written value in range.
CREATE TEMP TABLE ref_ok ON COMMIT DROP AS
SELECT b.collector_result_id, coalesce(b.customer_id, br.customer_id) AS customer_id, cr.created_at
  FROM ref_brand b
  JOIN collector_results cr ON cr.id = b.collector_result_id
  LEFT JOIN brands br ON br.id = b.brand_id
 WHERE coalesce(b.customer_id, br.customer_id) IS NOT NULL
   AND pg_temp.fits(b.visibility_index) AND pg_temp.fits(b.share_of_answers_brand)
   AND (pg_temp.label(b.sentiment_label) IS NULL OR pg_temp.fits(b.sentiment_score))
   AND NOT EXISTS (
     SELECT 1 FROM ref_comp c
      WHERE c.collector_result_id = b.collector_result_id
        AND NOT (pg_temp.fits(c.visibility_index_competitor) AND pg_temp.fits(c.share_of_answers_competitor)
                 AND (pg_temp.label(c.sentiment_label_competitor) IS NULL OR pg_temp.fits(c.sentiment_score_competitor))));

INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic,
                          collected_at, metadata, created_at)
SELECT b.collector_result_id, b.brand_id, ok.customer_id, b.query_id, b.collector_type, b.topic,
       b.processed_at, b.metadata, ok.created_at
  FROM ref_brand b JOIN ref_ok ok USING (collector_result_id);

INSERT INTO brand_metrics (metric_fact_id, visibility_index, share_of_answers, total_mentions,
                           product_mentions, first_position, has_presence)
SELECT f.id, b.visibility_index, b.share_of_answers_brand, coalesce(b.total_brand_mentions, 0),
       coalesce(b.total_brand_mentions, 0), b.brand_first_position, b.has_brand_presence
  FROM ref_brand b JOIN metric_facts f USING (collector_result_id) JOIN ref_ok USING (collector_result_id);

INSERT INTO brand_sentiment (metric_fact_id, sentiment_label, sentiment_score, positive_sentences, negative_sentences)
SELECT f.id, pg_temp.label(b.sentiment_label), b.sentiment_score,
       coalesce(b.sentiment_positive_sentences, '[]'), coalesce(b.sentiment_negative_sentences, '[]')
  FROM ref_brand b JOIN metric_facts f USING (collector_result_id) JOIN ref_ok USING (collector_result_id)
 WHERE pg_temp.label(b.sentiment_label) IS NOT NULL AND b.sentiment_score IS NOT NULL;

INSERT INTO competitor_metrics (metric_fact_id, competitor_id, visibility_index, share_of_answers,
                                total_mentions, product_mentions, first_position, has_presence)
SELECT f.id, c.cid, c.visibility_index_competitor, c.share_of_answers_competitor,
       coalesce(c.competitor_mentions, 0), coalesce(c.competitor_mentions, 0),
       c.competitor_positions[1], coalesce(c.competitor_mentions, 0) > 0
  FROM ref_comp c JOIN metric_facts f USING (collector_result_id) JOIN ref_ok USING (collector_result_id);

INSERT INTO competitor_sentiment (metric_fact_id, competitor_id, sentiment_label, sentiment_score,
                                  positive_sentences, negative_sentences)
SELECT f.id, c.cid, pg_temp.label(c.sentiment_label_competitor), c.sentiment_score_competitor,
       coalesce(c.sentiment_positive_sentences_competitor, '[]'),
       coalesce(c.sentiment_negative_sentences_competitor, '[]')
  FROM ref_comp c JOIN metric_facts f USING (collector_result_id) JOIN ref_ok USING (collector_result_id)
 WHERE pg_temp.label(c.sentiment_label_competitor) IS NOT NULL AND c.sentiment_score_competitor IS NOT NULL;

COMMIT;
