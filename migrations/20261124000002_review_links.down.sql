DROP TABLE review_links;
