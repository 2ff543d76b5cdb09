-- Chapter texts are compressed when stored (TOAST). lz4 costs Postgres about 0.3 ms less CPU per
-- 94 KB delivery than the default pglz, for the same size (docs/PERFORMANCE.md). New values only;
-- a server built without lz4 (or the embedded PGlite) keeps the default, with a notice.
DO $$
BEGIN
  ALTER TABLE "chapters" ALTER COLUMN "content" SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
  RAISE NOTICE 'lz4 is not available on this server: chapters.content keeps the default compression';
END $$;
