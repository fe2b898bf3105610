"""Images as Spark's image struct: representation (:mod:`.imageIO`) and reading (:mod:`.reader`)."""
