-- kafkaplus audit as one ClickHouse query over the OpenTelemetry Collector's
-- clickhouseexporter table (otel_traces). It computes the same report as
-- `kafkaplus audit FILE`: producer spans and consumer spans are joined on the
-- Kafka coordinates (topic, partition, offset), never on trace ids.
--
-- Parameters (ClickHouse query parameters, never interpolated into the text):
--   database, table  Identifier  where the spans are (the exporter's defaults: default, otel_traces)
--   since, until     Nullable(DateTime64(9, 'UTC'))  window on the producer span start:
--                    since inclusive, until exclusive; NULL = open
--   scan_from        Nullable(DateTime64(9, 'UTC'))  spans that started before it are not read
--                    at all (partition pruning); NULL = read every span
--   group            Nullable(String)  report only this consumer group; NULL = every group
--   max_orphans      UInt64  list at most this many never-consumed messages (0 to 16777215);
--                    counts are always complete
--
-- Output: one row per topic, in topic order, then one row whose topic is NULL
-- (it only holds spans that name no message). The total_* columns are the
-- same on every row.

WITH
-- Each Kafka span once, with the attributes the audit reads.
spans AS
(
    SELECT
        toUnixTimestamp64Nano(Timestamp) AS start_ns,
        start_ns + toInt64(Duration) AS end_ns,
        leftPad(lower(TraceId), 32, '0') AS trace_id,
        SpanAttributes AS attrs,
        -- The exporter writes 'Producer' (older versions 'SPAN_KIND_PRODUCER').
        lower(replaceRegexpOne(toString(SpanKind), '^SPAN_KIND_', '')) AS kind,
        multiIf(
            mapContains(attrs, 'messaging.operation.type'), attrs['messaging.operation.type'],
            mapContains(attrs, 'messaging.operation'), attrs['messaging.operation'],
            kind = 'producer', 'send',
            kind = 'consumer', 'process',
            kind = 'client', 'receive',
            '') AS operation,
        -- p: a send, c: a process span (one message), b: a batch (poll/consume) span.
        multiIf(
            operation IN ('send', 'publish'), 'p',
            operation IN ('process', 'deliver'), 'c',
            operation = 'receive', 'b',
            '') AS role,
        if(mapContains(attrs, 'messaging.destination.name'),
           attrs['messaging.destination.name'], NULL) AS span_topic,
        multiIf(
            mapContains(attrs, 'messaging.consumer.group.name'),
                attrs['messaging.consumer.group.name'],
            mapContains(attrs, 'messaging.kafka.consumer.group'),
                attrs['messaging.kafka.consumer.group'],
            '(unknown)') AS consumer_group,
        toString(StatusCode) IN ('Error', 'STATUS_CODE_ERROR')
            OR mapContains(attrs, 'error.type') AS failed,
        if(mapContains(attrs, 'error.type'), attrs['error.type'], '(no error.type)') AS error_type,
        -- Element 1 only counts the span. Then (destination, partition, offset) as
        -- written, for each message the span names: its own and, for a batch, each
        -- link's (the links carry partition and offset). Only these strings go
        -- on, not the attribute maps.
        arrayConcat(
            [('', '', '')],
            if(role != '', [(
                '',
                multiIf(
                    mapContains(attrs, 'messaging.destination.partition.id'),
                        attrs['messaging.destination.partition.id'],
                    mapContains(attrs, 'messaging.kafka.destination.partition'),
                        attrs['messaging.kafka.destination.partition'],
                    mapContains(attrs, 'messaging.kafka.partition'),
                        attrs['messaging.kafka.partition'],
                    ''),
                multiIf(
                    mapContains(attrs, 'messaging.kafka.offset'), attrs['messaging.kafka.offset'],
                    mapContains(attrs, 'messaging.kafka.message.offset'),
                        attrs['messaging.kafka.message.offset'],
                    ''))], []),
            if(role = 'b', arrayMap(m -> (
                m['messaging.destination.name'],
                multiIf(
                    mapContains(m, 'messaging.destination.partition.id'),
                        m['messaging.destination.partition.id'],
                    mapContains(m, 'messaging.kafka.destination.partition'),
                        m['messaging.kafka.destination.partition'],
                    mapContains(m, 'messaging.kafka.partition'), m['messaging.kafka.partition'],
                    ''),
                multiIf(
                    mapContains(m, 'messaging.kafka.offset'), m['messaging.kafka.offset'],
                    mapContains(m, 'messaging.kafka.message.offset'),
                        m['messaging.kafka.message.offset'],
                    '')), Links.Attributes), [])) AS named
    FROM {database:Identifier}.{table:Identifier}
    WHERE SpanAttributes['messaging.system'] = 'kafka'
      AND ({scan_from:Nullable(DateTime64(9, 'UTC'))} IS NULL
           OR Timestamp >= {scan_from:Nullable(DateTime64(9, 'UTC'))})
),
-- One row per span that only counts it (i = 1, topic NULL), then one row per
-- message the span names. Rows that name no usable message keep topic NULL.
facts AS
(
    SELECT
        i,
        role AS span_role,
        consumer_group,
        failed,
        error_type,
        trace_id,
        -- A batch hands its messages over when poll()/consume() returns.
        if(role = 'b', end_ns, start_ns) AS t,
        ({since:Nullable(DateTime64(9, 'UTC'))} IS NULL
            OR t >= toUnixTimestamp64Nano({since:Nullable(DateTime64(9, 'UTC'))}))
        AND ({until:Nullable(DateTime64(9, 'UTC'))} IS NULL
            OR t < toUnixTimestamp64Nano({until:Nullable(DateTime64(9, 'UTC'))})) AS in_window,
        if(i > 2 AND k.1 != '', k.1, span_topic) AS fact_topic,
        replaceRegexpAll(k.2, '^\\s+|\\s+$', '') AS raw_partition,
        -- librdkafka reports -1 for a partition not yet chosen.
        if(raw_partition IN ('', '-1'), '?', raw_partition) AS fact_partition,
        replaceRegexpAll(k.3, '^\\s+|\\s+$', '') AS raw_offset,
        if(match(raw_offset, '^[0-9]+$'), toUInt64OrNull(raw_offset), NULL) AS fact_offset,
        i > 1 AND fact_topic IS NOT NULL
            AND (role = 'p' OR (role IN ('c', 'b') AND fact_offset IS NOT NULL)) AS usable,
        if(usable, role, '') AS fact_role,
        if(usable, fact_topic, NULL) AS topic,
        if(usable, fact_partition, '') AS partition,
        if(usable, fact_offset, NULL) AS offset
    FROM spans
    ARRAY JOIN named AS k, arrayEnumerate(named) AS i
),
-- One row per message (topic, partition, offset): the one aggregation whose
-- size grows with the data. Sends without an offset (never acknowledged) share
-- offset NULL, one row per error type.
messages AS
(
    SELECT
        topic,
        partition,
        offset,
        if(offset IS NULL AND fact_role = 'p' AND in_window AND failed, error_type, '')
            AS failure,
        countIf(i = 1) AS msg_spans,
        countIf(i = 1 AND span_role != '') AS msg_messaging_spans,
        countIf(fact_role = 'p' AND in_window) AS msg_produced,
        countIf(fact_role = 'p' AND NOT in_window) > 0 AS msg_produced_outside,
        -- Several producer spans for one offset (overlapping exports): the earliest counts.
        minIf(t, fact_role = 'p' AND in_window) AS msg_produced_ns,
        argMinIf(trace_id, (t, trace_id), fact_role = 'p' AND in_window) AS msg_trace_id,
        countIf(fact_role = 'p' AND in_window AND failed) AS msg_failed,
        -- (group, from a process span?, hand-over time) per consumption
        groupArrayIf((consumer_group, fact_role = 'c', t), fact_role IN ('c', 'b'))
            AS msg_consumptions
    FROM facts
    GROUP BY topic, partition, offset, failure
),
-- Per message and consumer group, the hand-over: the earliest process span if
-- there is one (it times the hand-over exactly), else the earliest batch (which
-- only bounds it).
consumed AS
(
    SELECT
        *,
        offset IS NOT NULL AND msg_produced > 0 AS msg_delivered,
        arraySort(arrayDistinct(arrayMap(c -> c.1, msg_consumptions))) AS consumer_groups,
        arrayMap(g -> (g, if(
                arrayExists(c -> c.1 = g AND c.2, msg_consumptions),
                arrayMin(arrayMap(c -> c.3, arrayFilter(c -> c.1 = g AND c.2, msg_consumptions))),
                arrayMin(arrayMap(c -> c.3, arrayFilter(c -> c.1 = g, msg_consumptions))))),
            consumer_groups) AS msg_consumed
    FROM messages
),
partitions AS
(
    SELECT
        topic,
        partition,
        sum(msg_spans) AS part_spans,
        sum(msg_messaging_spans) AS part_messaging_spans,
        countIf(msg_delivered) AS part_delivered,
        sumIf(msg_failed, offset IS NULL) AS part_failed,
        sumIf(msg_produced - msg_failed, offset IS NULL) AS part_unacknowledged,
        sumIf(msg_produced - 1, msg_delivered AND msg_produced > 1) AS part_duplicates,
        countIf(msg_delivered AND empty(msg_consumed)) AS part_never_consumed,
        sumMapIf([failure], [msg_failed], offset IS NULL AND failure != '') AS part_failures,
        groupUniqArrayArray(arrayMap(c -> c.1, msg_consumed)) AS part_groups,
        -- per group: delivered messages it consumed
        sumMapIf(arrayMap(c -> c.1, msg_consumed), arrayMap(c -> toUInt64(1), msg_consumed),
                 msg_delivered) AS part_matched,
        -- per group: consumed messages with no producer span at all, counted by
        -- the consumption's own time
        sumMapIf(arrayMap(c -> c.1, msg_consumed),
                 arrayMap(c -> toUInt64(
                     ({since:Nullable(DateTime64(9, 'UTC'))} IS NULL
                        OR c.2 >= toUnixTimestamp64Nano({since:Nullable(DateTime64(9, 'UTC'))}))
                     AND ({until:Nullable(DateTime64(9, 'UTC'))} IS NULL
                        OR c.2 < toUnixTimestamp64Nano({until:Nullable(DateTime64(9, 'UTC'))}))),
                     msg_consumed),
                 msg_produced = 0 AND NOT msg_produced_outside) AS part_without_producer,
        groupArrayArrayIf(arrayMap(c -> (c.1, c.2 - msg_produced_ns), msg_consumed),
                          msg_delivered) AS part_latencies,
        groupArraySortedIf(greatest(1, {max_orphans:UInt64}))(
            (assumeNotNull(offset), msg_trace_id, msg_produced_ns),
            msg_delivered AND empty(msg_consumed)) AS part_orphans,
        countIf(msg_delivered
                AND NOT has(arrayMap(c -> c.1, msg_consumed), {group:Nullable(String)}))
            AS part_group_missed,
        groupArraySortedIf(greatest(1, {max_orphans:UInt64}))(
            (assumeNotNull(offset), msg_trace_id, msg_produced_ns),
            msg_delivered
            AND NOT has(arrayMap(c -> c.1, msg_consumed), {group:Nullable(String)}))
            AS part_group_orphans
    FROM consumed
    GROUP BY topic, partition
),
topics AS
(
    SELECT
        topic,
        sum(part_spans) AS topic_spans,
        sum(part_messaging_spans) AS topic_messaging_spans,
        arraySort(groupUniqArrayArray(part_groups)) AS all_groups,
        if({group:Nullable(String)} IS NULL, all_groups,
           arrayFilter(g -> g = {group:Nullable(String)}, all_groups)) AS shown_groups,
        -- partitions that had sends in the window, numbers first in numeric order
        arraySort(p -> (NOT match(p.1, '^[0-9]+$'), toUInt64OrZero(p.1), p.1),
            groupArrayIf(
                (partition, part_delivered, part_failed, part_unacknowledged,
                 part_never_consumed, part_matched, part_orphans, part_group_missed,
                 part_group_orphans),
                part_delivered + part_failed + part_unacknowledged > 0)) AS parts,
        sum(part_delivered) AS topic_delivered,
        sum(part_failed) AS topic_failed,
        sum(part_unacknowledged) AS topic_unacknowledged,
        sum(part_never_consumed) AS topic_never_consumed,
        sum(part_duplicates) AS topic_duplicates,
        sumMap(part_failures.1, part_failures.2) AS topic_failures,
        sumMap(part_matched.1, part_matched.2) AS topic_matched,
        sumMap(part_without_producer.1, part_without_producer.2) AS topic_without_producer,
        groupArrayArray(part_latencies) AS topic_latencies
    FROM partitions
    GROUP BY topic
    HAVING topic IS NULL
        OR topic_delivered + topic_failed + topic_unacknowledged > 0
        OR notEmpty(all_groups)
),
report AS
(
    SELECT
        topic,
        topic_delivered + topic_failed + topic_unacknowledged AS produced,
        topic_delivered AS delivered,
        topic_failed AS failed,
        topic_unacknowledged AS unacknowledged,
        topic_never_consumed AS never_consumed,
        topic_duplicates AS duplicates,
        arrayZip(topic_failures.1, topic_failures.2) AS failures,
        notEmpty(all_groups) AS has_consumers,
        -- (partition, produced, delivered, failed, unacknowledged, never consumed,
        --  [(group, consumed)])
        arrayMap(p -> (p.1, p.2 + p.3 + p.4, p.2, p.3, p.4, p.5,
                       arrayMap(g -> (g, p.6.2[indexOf(p.6.1, g)]), shown_groups)),
                 parts) AS partitions,
        arrayMap(g -> arraySort(arrayMap(x -> x.2, arrayFilter(x -> x.1 = g, topic_latencies))),
                 shown_groups) AS sorted_latencies,
        -- (group, consumed, missing, without producer, latency count, p50, p90,
        --  p99, max in ms (nearest rank), [(partition, missing)])
        arrayMap((g, l) -> (
            g,
            topic_matched.2[indexOf(topic_matched.1, g)]
                + topic_without_producer.2[indexOf(topic_without_producer.1, g)],
            topic_delivered - topic_matched.2[indexOf(topic_matched.1, g)],
            topic_without_producer.2[indexOf(topic_without_producer.1, g)],
            length(l),
            if(empty(l), NULL, l[toUInt64(greatest(1, ceil(50 / 100 * length(l))))] / 1e6),
            if(empty(l), NULL, l[toUInt64(greatest(1, ceil(90 / 100 * length(l))))] / 1e6),
            if(empty(l), NULL, l[toUInt64(greatest(1, ceil(99 / 100 * length(l))))] / 1e6),
            if(empty(l), NULL, l[length(l)] / 1e6),
            arrayFilter(x -> x.2 > 0,
                        arrayMap(p -> (p.1, p.2 - p.6.2[indexOf(p.6.1, g)]), parts))),
            shown_groups, sorted_latencies) AS groups,
        -- (partition, offset, trace id, producer span start in ns)
        arraySlice(arrayFlatten(arrayMap(p -> arrayMap(o -> (p.1, o.1, o.2, o.3), p.7), parts)),
                   1, {max_orphans:UInt64}) AS topic_orphans,
        if(has(shown_groups, {group:Nullable(String)}),
           arraySum(arrayMap(p -> p.8, parts)), 0) AS group_orphan_count,
        if(has(shown_groups, {group:Nullable(String)}),
           arraySlice(arrayFlatten(arrayMap(p -> arrayMap(o -> (p.1, o.1, o.2, o.3), p.9),
                                            parts)),
                      1, {max_orphans:UInt64}),
           []) AS topic_group_orphans,
        topic_spans,
        topic_messaging_spans
    FROM topics
)
SELECT
    topic,
    produced,
    delivered,
    failed,
    unacknowledged,
    never_consumed,
    failures,
    partitions,
    has_consumers,
    groups,
    -- the lists stop at max_orphans across all topics, in topic order
    sum(length(topic_orphans)) OVER upto AS orphans_through,
    arraySlice(topic_orphans, 1,
               least({max_orphans:UInt64}, orphans_through)
               - least({max_orphans:UInt64}, orphans_through - length(topic_orphans)))
        AS orphans,
    group_orphan_count,
    sum(length(topic_group_orphans)) OVER upto AS group_orphans_through,
    arraySlice(topic_group_orphans, 1,
               least({max_orphans:UInt64}, group_orphans_through)
               - least({max_orphans:UInt64}, group_orphans_through - length(topic_group_orphans)))
        AS group_orphans,
    sum(never_consumed) OVER () AS total_never_consumed,
    sum(group_orphan_count) OVER () AS total_group_orphans,
    sum(duplicates) OVER () AS total_duplicates,
    sum(topic_spans) OVER () AS total_kafka_spans,
    sum(topic_messaging_spans) OVER () AS total_messaging_spans
FROM report
WINDOW upto AS (ORDER BY topic ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY topic
