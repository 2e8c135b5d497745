"""Placeholder so the package collects before the group modules land."""

from tests.mutations import Mutation

MUTATIONS: list[Mutation] = []
