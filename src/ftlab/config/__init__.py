"""Configuration: the one schema (every option, declared once), its checks, composition, and --help.

The schema is assembled from what the rooms below declare (methods/, data/formats/, tracking/, exports/), so this
package sits above them and below the services and the recipe. Nothing here imports torch, and the rooms keep their
module tops light, so composing, validating and --help stay fast.
"""
