-- depends: link_0001_links
-- A page of one user's links is planned from how many links the planner thinks that user has. With the default
-- sample (statistics target 100) a user holding ~0.1% of the rows is as likely as not to be missed by the
-- most-common-values list and estimated at a few rows, and is then fetched by bitmap scan and sorted instead of
-- walked in the index's order. A larger sample keeps such users in the list.
ALTER TABLE links ALTER COLUMN username SET STATISTICS 1000;
