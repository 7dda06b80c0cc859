-- 011_down: undo 011_audit_logs (partitions and partitioned indexes go with
-- the parent).
DROP TABLE audit_logs;
