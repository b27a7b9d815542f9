"""What every user's nbgrader reads on the course's hub: the course, and where its exchange is."""
import os

c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "llm-systems"         # autograder.config.COURSE_ID
c.Exchange.root = os.environ.get("COURSE_EXCHANGE_ROOT", "/srv/nbgrader/exchange")
