"""Quality you can measure: masks against labels, results against the request (`restyle eval`)."""
