"""The decision log kept for days: Parquet files drained from the Redis streams.

==========  ==============================================================================
module      owns
==========  ==============================================================================
``rows``    the file schemas, and stream entries turned into rows
``store``   the file layout (one file per stream and time slice) and durable writes (fsspec)
``drain``   moving closed time slices from the streams into files, resumably
``read``    reading the files back, decisions joined with their outcomes
``obd``     writing the Open Bandit Dataset's CSV layout
==========  ==============================================================================

Outcomes arrive up to the attribution window (a day by default) after their slate, while the
decision stream holds minutes of a large forum's traffic: a slate cannot wait in Redis for its
window to close. So both streams are drained as they are, each into files of its own, and the
reader joins decisions with outcomes by ``(request_id, post_id)``.
"""
