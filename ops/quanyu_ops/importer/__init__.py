"""`quanyu stores import` and `quanyu stock import`: files read (formats), rows checked (rows), calls
made (client, loading), and what the person running it is told (progress, command)."""
