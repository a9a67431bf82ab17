-- Nothing to undo: the baseline's claim is this one. (The claim of a copydesk from before
-- the engine owned its schema is not brought back: it named an application column.)
SELECT 1;
